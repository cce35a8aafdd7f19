package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// card2K is a realistic 2 KB JSON 1.0 release card, unique per n.
func card2K(n int) []byte {
	head := fmt.Sprintf(`{"config":{"update_multi":true},"header":{"template":"blue","title":{"tag":"plain_text","content":"灰度发布完成 #%d"}},"i18n_elements":{"zh_cn":[{"tag":"div","text":{"tag":"lark_md","content":"`, n)
	tail := `"}},{"tag":"action","actions":[{"tag":"button","type":"primary","text":{"tag":"plain_text","content":"完成「全量发布」"},"value":{"button_type":"public_publish","button_id":"1626958610001"}}]}],` +
		`"en_us":[{"tag":"div","text":{"tag":"lark_md","content":"Canary finished."}},{"tag":"action","actions":[{"tag":"button","type":"primary","text":{"tag":"plain_text","content":"Complete full release"},"value":{"button_type":"public_publish","button_id":"1626958610001"}}]}]}}`
	return []byte(head + strings.Repeat("x", 2048-len(head)-len(tail)) + tail)
}

// loadtest holds one load run's settings.
type loadtest struct {
	cf          clientFlags
	cards       int
	concurrency int
	duration    time.Duration
	prefix      string
	challenge   bool
	hc          *http.Client
}

// runLoadtest is `cardcallback loadtest`: it stores 2 KB cards through the
// admin API, then clicks them (the first click of a card runs the logic,
// later ones are repeats) at a concurrency for a duration, and reports
// throughput, latency and status counts. Any answer that is not 200 with
// the expected card fails the run. With -emit it writes the signed
// requests for wrk instead of sending them.
func runLoadtest(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var lt loadtest
	fs, finish := lt.cf.define("cardcallback loadtest", getenv, stderr)
	fs.IntVar(&lt.cards, "cards", 1000, "2 KB cards to store; request i clicks card i mod cards")
	fs.IntVar(&lt.concurrency, "concurrency", 32, "requests in flight")
	fs.DurationVar(&lt.duration, "duration", 10*time.Second, "how long to send")
	fs.StringVar(&lt.prefix, "prefix", "om_load_"+randomID(4)+"_", "message id prefix of the stored cards")
	fs.BoolVar(&lt.challenge, "challenge", false, "send URL verification challenges instead of clicks")
	emit := fs.String("emit", "", "write -requests raw HTTP requests to `file` (for wrk) instead of sending them")
	requests := fs.Int("requests", 100000, "how many requests -emit writes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := finish(); err != nil {
		return err
	}
	if lt.cards < 1 || lt.concurrency < 1 || lt.duration <= 0 || *requests < 1 {
		return errors.New("-cards, -concurrency, -duration and -requests must be positive")
	}
	lt.hc = &http.Client{Timeout: lt.cf.timeout, Transport: &http.Transport{
		MaxIdleConns: lt.concurrency, MaxIdleConnsPerHost: lt.concurrency, IdleConnTimeout: time.Minute,
	}}
	if !lt.challenge {
		start := time.Now()
		if err := lt.storeCards(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "stored %d cards of 2 KB in %s\n", lt.cards, time.Since(start).Round(time.Millisecond))
	}
	if *emit != "" {
		return lt.emit(*emit, *requests, stdout)
	}
	return lt.drive(ctx, stdout)
}

func (lt *loadtest) id(i int) string { return lt.prefix + strconv.Itoa(i) }

// storeCards PUTs the cards, concurrently.
func (lt *loadtest) storeCards(ctx context.Context) error {
	var next atomic.Int64
	errc := make(chan error, lt.concurrency)
	var wg sync.WaitGroup
	for range lt.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < lt.cards; i = int(next.Add(1) - 1) {
				req, _ := http.NewRequestWithContext(ctx, "PUT", lt.cf.admin+"/cards/"+url.PathEscape(lt.id(i)), bytes.NewReader(card2K(i)))
				if lt.cf.cfg.adminToken != "" {
					req.Header.Set("Authorization", "Bearer "+lt.cf.cfg.adminToken)
				}
				resp, err := lt.hc.Do(req)
				if err != nil {
					errc <- fmt.Errorf("storing cards: %w", err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					errc <- fmt.Errorf("storing cards: PUT answered %d %s", resp.StatusCode, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// request builds request i: a click of card i mod cards, or a challenge.
func (lt *loadtest) request(i int) platformRequest {
	c := Click{
		OpenID: "ou_load", UserID: "u_load", UnionID: "on_load", MessageID: lt.id(i % lt.cards), ChatID: "oc_load",
		TenantKey: "load", Token: "c-load" + strconv.Itoa(i), Tag: "button", Value: publishValue("1626958610001"),
	}
	return lt.cf.build(c, lt.challenge)
}

// emit writes n raw HTTP requests, each after a line with its length.
func (lt *loadtest) emit(path string, n int, stdout io.Writer) error {
	u, err := url.Parse(lt.cf.url)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var raw bytes.Buffer
	for i := range n {
		r := lt.request(i)
		raw.Reset()
		fmt.Fprintf(&raw, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", u.RequestURI(), u.Host, len(r.Body))
		r.Header.Write(&raw)
		raw.WriteString("\r\n")
		raw.Write(r.Body)
		fmt.Fprintf(w, "%d\n", raw.Len())
		w.Write(raw.Bytes())
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d requests to %s\n", n, path)
	return nil
}

// result is what one request measured.
type result struct {
	first   bool
	status  int
	latency time.Duration
	bad     string // why the answer was not the expected one
}

func (lt *loadtest) drive(ctx context.Context, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, lt.duration)
	defer cancel()
	var next atomic.Int64
	results := make([][]result, lt.concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range lt.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				r := lt.request(i)
				t0 := time.Now()
				status, body, err := send(ctx, lt.hc, "POST", lt.cf.url, r)
				if err != nil {
					if ctx.Err() == nil {
						results[w] = append(results[w], result{first: i < lt.cards, bad: err.Error()})
					}
					continue
				}
				res := result{first: i < lt.cards, status: status, latency: time.Since(t0)}
				if status == http.StatusOK {
					res.bad = lt.check(i, body)
				}
				results[w] = append(results[w], res)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	return report(stdout, slices.Concat(results...), elapsed, lt.challenge)
}

// check compares an answer with what request i should get.
func (lt *loadtest) check(i int, body []byte) string {
	if lt.challenge {
		var ch struct{ Challenge string }
		if json.Unmarshal(body, &ch) != nil || ch.Challenge == "" {
			return "not a challenge answer"
		}
		return ""
	}
	want, _ := doneCard(card2K(i % lt.cards))
	got := body
	if lt.cf.generation() == New {
		var a struct {
			Card struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			} `json:"card"`
		}
		if json.Unmarshal(body, &a) != nil || a.Card.Type != "raw" {
			return "no card in the answer"
		}
		got = a.Card.Data
	}
	if !bytes.Equal(got, want) && !jsonEqual(got, want) {
		return "not the done card"
	}
	return ""
}

// jsonEqual compares two JSON texts by meaning.
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// report prints the run's figures and fails it on any unexpected answer.
func report(w io.Writer, rs []result, elapsed time.Duration, challenge bool) error {
	statuses := map[int]int{}
	bad := map[string]int{}
	failed := 0
	var first, repeat []time.Duration
	for _, r := range rs {
		statuses[r.status]++
		if r.bad != "" {
			bad[r.bad]++
		}
		if r.status != http.StatusOK || r.bad != "" {
			failed++
		}
		if r.status == 0 {
			continue
		}
		if r.first && !challenge {
			first = append(first, r.latency)
		} else {
			repeat = append(repeat, r.latency)
		}
	}
	fmt.Fprintf(w, "%d requests in %s: %.0f requests/s\n", len(rs), elapsed.Round(time.Millisecond), float64(len(rs))/elapsed.Seconds())
	name := "repeat clicks"
	if challenge {
		name = "challenges"
	}
	for _, l := range []struct {
		name string
		d    []time.Duration
	}{{"first clicks", first}, {name, repeat}} {
		if len(l.d) == 0 {
			continue
		}
		slices.Sort(l.d)
		q := func(p float64) time.Duration { return l.d[min(len(l.d)-1, int(p*float64(len(l.d))))] }
		fmt.Fprintf(w, "  %-14s %8d  p50 %-9s p90 %-9s p99 %-9s max %s\n", l.name, len(l.d),
			q(0.50).Round(time.Microsecond), q(0.90).Round(time.Microsecond), q(0.99).Round(time.Microsecond), l.d[len(l.d)-1].Round(time.Microsecond))
	}
	codes := make([]int, 0, len(statuses))
	for c := range statuses {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	fmt.Fprint(w, "  status")
	for _, c := range codes {
		label := strconv.Itoa(c)
		if c == 0 {
			label = "no answer"
		}
		fmt.Fprintf(w, "  %s: %d", label, statuses[c])
	}
	fmt.Fprintln(w)
	for why, n := range bad {
		fmt.Fprintf(w, "  unexpected: %s: %d\n", why, n)
	}
	if len(rs) == 0 {
		return errors.New("no request was answered")
	}
	if failed > 0 {
		return fmt.Errorf("%d answers were not 200 with the expected card", failed)
	}
	return nil
}
