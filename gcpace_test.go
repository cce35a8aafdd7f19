package main

import (
	"context"
	"runtime/debug"
	"testing"
	"time"
)

func TestGCPercent(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, 100},
		{10 * mb, 100},  // small: Go's default
		{64 * mb, 100},  // the headroom is the whole heap
		{128 * mb, 50},  // 64 MB of headroom
		{640 * mb, 10},  // still 64 MB
		{2560 * mb, 2},  // 2.5 GB of cards: 51 MB, the nearest below
		{6400 * mb, 1},  // the least a percent can give
		{20000 * mb, 1}, // 200 MB: no less than 1%
	} {
		if got := gcPercent(tc.live); got != tc.want {
			t.Errorf("gcPercent(%d MB): got %d, want %d", tc.live/mb, got, tc.want)
		}
	}
}

// TestPaceGC: the pacer sets the percent for the live heap and sets it
// back when it ends.
func TestPaceGC(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	asked := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		paceGC(ctx, time.Millisecond, func() uint64 {
			select {
			case asked <- struct{}{}:
			default:
			}
			return 640 << 20
		})
		close(done)
	}()
	<-asked
	<-asked // the first answer has been acted on
	if p := debug.SetGCPercent(-1); p != 10 {
		t.Errorf("GOGC %d with 640 MB live, want 10", p)
	}
	debug.SetGCPercent(10)
	cancel()
	<-done
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC left at %d after the pacer ended, want 100", p)
	}
}
