package main

import (
	"context"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// The collector's pacing. At Go's default (GOGC=100) a heap grows to twice
// what is live before it is collected: a server holding 2.5 GB of cards
// would let 2.5 GB of garbage pile up between collections. The cards sit
// in pointer-free blocks (table.go), so marking costs little however many
// there are; what a collection costs is the cleanup after it, which grows
// with the garbage: the runtime's sweeper and scavenger then hold the
// processor for milliseconds while connections ready on the network wait
// (with one processor, the scheduler runs the sweeper it has queued before
// it asks the network poller). So the heap is given a fixed headroom of
// garbage, not a share of what is live: collections come more often, each
// leaves a short cleanup, and what is allocated lands on memory still in
// use rather than on pages the process must fault in again. A GOGC set in
// the environment is left as it is.

// gcHeadroom is the garbage a heap may gather before it is collected. On
// 2.5 GB of cards under first clicks, headroom of about 25, 50, 125 and
// 250 MB gave a p99 of 3.3, 3.1–3.4, 4.8 and 5.6 ms; a quarter of the
// live heap (625 MB) 5.7–5.9 ms.
const gcHeadroom = 64 << 20

// gcPercent is the GOGC that gives a heap with live bytes gcHeadroom,
// rounded down to a whole percent: at most 100 (Go's default, for a small
// heap), at least 1 (above 6.4 GB live, the headroom is 1% of it).
func gcPercent(live uint64) int {
	if live <= gcHeadroom {
		return 100
	}
	return max(int(100*gcHeadroom/live), 1)
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
