package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Kinds of request error. Handlers wrap one of these with a message for the
// caller; errorStatus maps them to HTTP status codes in this one place.
var (
	errBadRequest   = errors.New("bad request")
	errUnauthorized = errors.New("unauthorized")
	errForbidden    = errors.New("forbidden")
	errNotFound     = errors.New("not found")
	errUpstream     = errors.New("feishu api")
	errUnavailable  = errors.New("unavailable")
)

func errorStatus(err error) int {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, errForbidden):
		return http.StatusForbidden
	case errors.Is(err, errNotFound):
		return http.StatusNotFound
	case errors.Is(err, errUpstream):
		return http.StatusBadGateway
	case errors.Is(err, errUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeJSON writes body, which is already JSON, with its headers set first.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	writeBody(w, status, answerBody{head: body})
}

var jsonContentType = []string{"application/json; charset=utf-8"}

// writeBody writes an answer given in parts.
func writeBody(w http.ResponseWriter, status int, b answerBody) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(b.len())}
	w.WriteHeader(status)
	for _, p := range [...][]byte{b.head, b.card, b.tail} {
		if len(p) > 0 {
			w.Write(p)
		}
	}
}

// writeValue marshals v and writes it.
func writeValue(w http.ResponseWriter, status int, v any) {
	b, err := marshalNoEscape(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"cannot encode the answer"}`)
	}
	writeJSON(w, status, b)
}

// writeError answers {"error":…} with the status err maps to. Errors the
// caller did not cause are logged; an unexpected one's text is not shown.
func writeError(w http.ResponseWriter, log *slog.Logger, r *http.Request, err error) {
	status := errorStatus(err)
	msg := err.Error()
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		msg = "body is larger than " + strconv.FormatInt(tooBig.Limit, 10) + " bytes"
	}
	switch {
	case status == http.StatusInternalServerError:
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = http.StatusText(status)
	case status > http.StatusInternalServerError:
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeValue(w, status, map[string]string{"error": msg})
}

// maxBody bounds every request body.
const maxBody = 1 << 20

// readBody reads the whole body, at most maxBody bytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return readBodyInto(w, r, nil)
}

// readBodyInto reads the whole body into buf's memory, at most maxBody
// bytes; a Content-Length sizes the read at once. The body, read to its
// end, is closed: net/http would otherwise read it once more before the
// answer, to make sure.
func readBodyInto(w http.ResponseWriter, r *http.Request, buf []byte) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, maxBody)
	if n := r.ContentLength; n > 0 && n <= maxBody && int64(cap(buf)) < n+1 {
		buf = make([]byte, 0, n+1) // +1 to see the end without growing
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			r.Body.Close()
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// bodyPool holds callback body buffers. Nothing decoded from a callback
// keeps a reference into its body but the envelope (see decodeInbound),
// which is opened before the answer, so a buffer is reused once the answer
// is written.
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// dateCache holds the Date header of the second answers are written in:
// net/http reads the clock and formats a Date for every response that has
// none, a few percent of a callback's time under load.
type dateCache struct{ perSecond[[]string] }

// header is the Date header of t, the time an answer is written. Its
// value is shared by every answer of that second and is not to be changed.
func (c *dateCache) header(t time.Time) []string { return c.get(t, httpDate) }

func httpDate(t time.Time) []string { return []string{t.UTC().Format(http.TimeFormat)} }

// methodNotAllowed answers every method of a path that has other routes.
func methodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeValue(w, http.StatusMethodNotAllowed, map[string]string{"error": "method " + r.Method + " not allowed; use " + allow})
	})
}

func notFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeValue(w, http.StatusNotFound, map[string]string{"error": "no such endpoint: " + r.URL.Path})
	})
}

func decodeJSON(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return nil
}
