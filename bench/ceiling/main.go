// Command ceiling is the benchmark's yardstick: a bare net/http handler
// that reads the request body and answers a fixed 2 KB card. The callback
// server's throughput is reported as a fraction of this one's.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18081", "listen address")
	flag.Parse()
	card := []byte(`{"config":{"update_multi":true},"elements":[{"tag":"div","text":{"tag":"lark_md","content":"` +
		strings.Repeat("x", 2048-92) + `"}}]}`)
	length := strconv.Itoa(len(card))
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("Content-Type", "application/json; charset=utf-8")
		h.Set("Content-Length", length)
		w.Write(card)
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
