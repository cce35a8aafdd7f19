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
		{10 * mb, 100},  // small: the default, at least 64 MB of headroom anyway
		{64 * mb, 100},  // the floor is the whole heap
		{128 * mb, 50},  // 64 MB of headroom
		{256 * mb, 25},  // a quarter from here on
		{1024 * mb, 25}, // 1 GB of cards: 256 MB of headroom, not 1 GB
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
			return 1 << 30
		})
		close(done)
	}()
	<-asked
	<-asked // the first answer has been acted on
	if p := debug.SetGCPercent(-1); p != 25 {
		t.Errorf("GOGC %d with 1 GB live, want 25", p)
	}
	debug.SetGCPercent(25)
	cancel()
	<-done
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC left at %d after the pacer ended, want 100", p)
	}
}
