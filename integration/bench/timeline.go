package bench

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"
)

// ansiEscape matches the terminal control sequences SeaBIOS and the
// kernel write to the serial console.
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|c)`)

// WriteTimeline writes one run's events in time order, as offsets from
// the start of `ctr run`: the host milestones (QEMU launched, agent
// answered, image pulled, task created and started, first output) and
// every serial console line with the time the host saw it complete.
// It returns an error for a nil sample.
func WriteTimeline(w io.Writer, s *RunSample) error {
	if s == nil {
		return fmt.Errorf("write timeline: no run to show")
	}
	type entry struct {
		at   time.Duration
		text string
	}
	entries := []entry{
		{0, "host: ctr run started"},
		{s.QEMULaunched, "host: shim launched QEMU"},
		{s.AgentAnswered, "host: cc-agent answered the shim's Health call"},
		{s.PullDone, fmt.Sprintf("host: image pulled in the guest (PullImage RPC %s, %d bytes)", secs(s.PullRPC), s.PullBytes)},
		{s.FirstOutput, "host: ctr printed the container's first output line"},
	}
	if s.TaskCreated > 0 {
		entries = append(entries, entry{s.TaskCreated, "host: /tasks/create published by the shim"})
	}
	if s.TaskStarted > 0 {
		entries = append(entries, entry{s.TaskStarted, "host: /tasks/start published by the shim"})
	}
	for _, l := range s.Timeline {
		text := strings.TrimSpace(ansiEscape.ReplaceAllString(l.Text, ""))
		text = strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return -1
			}
			return r
		}, text)
		if text != "" {
			entries = append(entries, entry{l.At, "console: " + text})
		}
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].at < entries[j].at })
	var b strings.Builder
	fmt.Fprintf(&b, "Timeline of %s (seconds since `ctr run` started; console lines as the host saw them, to within %s):\n", s.ID, pollInterval)
	for _, e := range entries {
		fmt.Fprintf(&b, "  %7.3f  %s\n", e.at.Seconds(), e.text)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
