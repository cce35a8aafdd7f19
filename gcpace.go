package main

import (
	"context"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// The collector's pacing. At Go's default (GOGC=100) a heap grows to twice
// what is live before it is collected: a server holding 1 GB of cards
// would grow to 2 GB, and under load everything allocated in between
// lands on memory the process has never touched, whose page faults were
// about a twentieth of a first click's CPU time. The cards sit in
// pointer-free blocks (table.go), so a collection costs little however
// many there are: a large heap is given a quarter of its size as
// headroom instead, with at least 64 MB, so that a small one is collected
// no more often than by default. A GOGC set in the environment is left
// as it is.

// gcHeadroomFloor is the least headroom a heap is given.
const gcHeadroomFloor = 64 << 20

// gcPercent is the GOGC that gives a heap with live bytes its headroom:
// a quarter of it, at least gcHeadroomFloor, at most live (GOGC=100).
func gcPercent(live uint64) int {
	headroom := max(live/4, gcHeadroomFloor)
	if live == 0 || headroom >= live {
		return 100
	}
	return int(100 * headroom / live)
}

// paceGC sets the GOGC that suits the live heap, as live reports it,
// every period until ctx ends, then sets it back. The caller leaves a GOGC
// set in the environment alone by not calling it.
func paceGC(ctx context.Context, period time.Duration, live func() uint64) {
	t := time.NewTicker(period)
	defer t.Stop()
	last := 100
	defer func() {
		if last != 100 {
			debug.SetGCPercent(100)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p := gcPercent(live()); p != last {
			debug.SetGCPercent(p)
			last = p
		}
	}
}

// liveHeap is the heap the last collection found live.
func liveHeap() uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
