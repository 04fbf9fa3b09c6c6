package policy

import (
	"context"
	"runtime"
	"testing"
)

// liveHeap returns the bytes of live heap objects after a full GC.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkPolicyHeap reports the live heap (bytes) an Engine keeps: after
// LoadDefault (the agent at start) and after Install of a pinned policy
// (the agent after InitSandbox), and the bytes allocated by one Load.
func BenchmarkPolicyHeap(b *testing.B) {
	base := liveHeap() // before any policy was compiled in this process
	pinned, err := Render(benchData)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var loaded, installed, allocated uint64
	for b.Loop() {
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		e, err := LoadDefault()
		if err != nil {
			b.Fatal(err)
		}
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		allocated = after.TotalAlloc - before.TotalAlloc
		loaded = liveHeap()
		if err := e.Install(ctx, pinned); err != nil {
			b.Fatal(err)
		}
		installed = liveHeap()
		runtime.KeepAlive(e)
	}
	b.ReportMetric(float64(loaded-base)/(1<<20), "MiB-live-after-LoadDefault")
	b.ReportMetric(float64(installed-base)/(1<<20), "MiB-live-after-Install")
	b.ReportMetric(float64(allocated)/(1<<20), "MiB-allocated-by-Load")
}
