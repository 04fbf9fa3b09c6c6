package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "test"}, "capabilities": ["oob"]}}`

// fakeServer serves one QMP connection on a unix socket, answering each
// command with handle's lines (a "%ID%" placeholder becomes the request id).
// It returns the socket path.
func fakeServer(t *testing.T, handle func(cmd string) []string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "qmpt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintln(conn, greeting)
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var req struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				fmt.Fprintln(conn, `{"error": {"class": "GenericError", "desc": "JSON parse error"}}`)
				continue
			}
			lines := handle(req.Execute)
			if lines == nil {
				return // hang up
			}
			for _, l := range lines {
				fmt.Fprintln(conn, strings.ReplaceAll(l, "%ID%", string(req.ID)))
			}
		}
	}()
	return path
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFakeServerInterleavedEventsAndErrors(t *testing.T) {
	path := fakeServer(t, func(cmd string) []string {
		switch cmd {
		case "qmp_capabilities":
			return []string{`{"return": {}, "id": %ID%}`}
		case "query-status":
			return []string{
				`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "RTC_CHANGE", "data": {"offset": 1}}`,
				`{"return": {"status": "stale"}, "id": 999}`, // a reply to someone else's id is skipped
				`{"timestamp": {"seconds": 1700000001, "microseconds": 0}, "event": "STOP"}`,
				`{"return": {"status": "paused", "running": false}, "id": %ID%}`,
			}
		case "quit":
			return []string{
				`{"timestamp": {"seconds": 1700000002, "microseconds": 0}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}`,
				`{"return": {}, "id": %ID%}`,
			}
		default:
			return []string{`{"id": %ID%, "error": {"class": "CommandNotFound", "desc": "The command ` + cmd + ` has not been found"}}`}
		}
	})
	ctx := ctxT(t)
	c, err := Connect(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Version() != "7.2.22" {
		t.Errorf("Version() = %q, want 7.2.22", c.Version())
	}

	st, err := c.Status(ctx)
	if err != nil || st != RunStatePaused {
		t.Fatalf("Status() = %q, %v, want paused", st, err)
	}
	ev := c.Events()
	if len(ev) != 2 || ev[0].Name != "RTC_CHANGE" || ev[1].Name != "STOP" {
		t.Fatalf("Events() = %+v, want RTC_CHANGE then STOP", ev)
	}
	if string(ev[0].Data) != `{"offset": 1}` || !ev[0].Timestamp.Equal(time.Unix(1700000000, 5000)) {
		t.Errorf("event 0 = %+v, want data {\"offset\": 1} at 1700000000.000005", ev[0])
	}
	if len(c.Events()) != 0 {
		t.Error("Events() did not forget the returned events")
	}

	err = c.Execute(ctx, "bogus", map[string]int{"a": 1}, nil)
	var qerr *Error
	if !errors.As(err, &qerr) || qerr.Class != "CommandNotFound" || qerr.Command != "bogus" {
		t.Fatalf("Execute(bogus) = %v, want *Error with class CommandNotFound", err)
	}
	if want := "qmp command bogus failed: CommandNotFound: The command bogus has not been found"; err.Error() != want {
		t.Errorf("error text = %q, want %q", err, want)
	}

	if err := c.Quit(ctx); err != nil {
		t.Fatalf("Quit() = %v", err)
	}
	if ev := c.Events(); len(ev) != 1 || ev[0].Name != "SHUTDOWN" || !strings.Contains(string(ev[0].Data), "host-qmp-quit") {
		t.Errorf("Events() after quit = %+v, want one SHUTDOWN", ev)
	}
}

func TestFakeServerHangupAndTimeout(t *testing.T) {
	t.Run("hang up mid-command", func(t *testing.T) {
		path := fakeServer(t, func(cmd string) []string {
			if cmd == "qmp_capabilities" {
				return []string{`{"return": {}, "id": %ID%}`}
			}
			return nil
		})
		ctx := ctxT(t)
		c, err := Connect(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Status(ctx)
		if err == nil || !strings.Contains(err.Error(), "read qmp reply to query-status from "+path) || !strings.Contains(err.Error(), "EOF") {
			t.Fatalf("Status() = %v, want an EOF error naming the command and socket", err)
		}
		err = c.Execute(ctx, "query-version", nil, nil)
		if err == nil || !strings.Contains(err.Error(), "connection unusable after an earlier error") {
			t.Fatalf("second Execute() = %v, want the connection reported unusable", err)
		}
	})
	t.Run("quit tolerates hang up", func(t *testing.T) {
		path := fakeServer(t, func(cmd string) []string {
			if cmd == "qmp_capabilities" {
				return []string{`{"return": {}, "id": %ID%}`}
			}
			return nil
		})
		ctx := ctxT(t)
		c, err := Connect(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Quit(ctx); err != nil {
			t.Fatalf("Quit() = %v, want nil when QEMU hangs up", err)
		}
	})
	t.Run("no reply ends with the context", func(t *testing.T) {
		path := fakeServer(t, func(cmd string) []string {
			if cmd == "qmp_capabilities" {
				return []string{`{"return": {}, "id": %ID%}`}
			}
			return []string{} // never answer
		})
		c, err := Connect(ctxT(t), path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = c.Status(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Status() = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Status() took %v after a 100ms deadline", d)
		}
	})
	t.Run("not a qmp socket", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "s")
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			conn, err := l.Accept()
			if err == nil {
				fmt.Fprintln(conn, `{"hello": 1}`)
				defer conn.Close()
				time.Sleep(time.Second)
			}
		}()
		_, err = Connect(ctxT(t), path)
		if err == nil || !strings.Contains(err.Error(), "is this a QMP socket?") {
			t.Fatalf("Connect() = %v, want a not-QMP error", err)
		}
	})
	t.Run("missing socket", func(t *testing.T) {
		_, err := Connect(ctxT(t), "/nonexistent/qmp.sock")
		if err == nil || !strings.Contains(err.Error(), "connect qmp socket /nonexistent/qmp.sock") {
			t.Fatalf("Connect() = %v, want an error naming the socket", err)
		}
	})
}
