package main

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// requireAdmin guards the admin API with a bearer token compared in
// constant time. With no token configured the API is open only when open is
// true (development mode on a loopback address).
func requireAdmin(log *slog.Logger, token string, open bool, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case token == "" && open:
		case token == "":
			writeError(w, log, r, fmt.Errorf("%w: the admin API is disabled: set CARDCALLBACK_ADMIN_TOKEN (or -admin-token) to use it", errForbidden))
			return
		case subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1:
			w.Header().Set("WWW-Authenticate", `Bearer realm="cardcallback"`)
			writeError(w, log, r, fmt.Errorf("%w: missing or wrong admin token (Authorization: Bearer …)", errUnauthorized))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// compactCard checks that data is one JSON object and returns it compacted.
func compactCard(data []byte) ([]byte, error) {
	if !isObject(data) {
		return nil, fmt.Errorf("%w: a card must be a JSON object", errBadRequest)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return nil, fmt.Errorf("%w: the card is not valid JSON: %v", errBadRequest, err)
	}
	return buf.Bytes(), nil
}

// splitList parses a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// storeError marks a failed store write as the server's fault, not the
// caller's: the write was not acknowledged and may be retried.
func storeError(err error) error {
	return fmt.Errorf("%w: store: %w", errUnavailable, err)
}

// handleCardPut stores a card and its allow list (?allow=ou_a,ou_b) under a
// message id. The click states of the message are kept.
func handleCardPut(log *slog.Logger, st Store, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(w, r)
		if err == nil {
			body, err = compactCard(body)
		}
		if err != nil {
			writeError(w, log, r, err)
			return
		}
		allow := splitList(r.URL.Query().Get("allow"))
		done := renderDone(body)
		if err := st.Update(r.PathValue("id"), func(cur *Record) *Record {
			return cur.withCard(body, done, allow, now())
		}); err != nil {
			writeError(w, log, r, storeError(err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// handleCardGet answers the card as it stands now: while a click of it is
// running, as the in-progress card its users see.
func handleCardGet(log *slog.Logger, st Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec, ok := st.Get(r.PathValue("id"))
		if !ok || rec.Card == nil {
			writeError(w, log, r, fmt.Errorf("%w: no card stored for this message", errNotFound))
			return
		}
		card := rec.Card
		for _, c := range rec.Clicks {
			if c.Status == StatusRunning {
				card = renderProgress(card)
				break
			}
		}
		writeJSON(w, http.StatusOK, card)
	})
}

func handleCardDelete(log *slog.Logger, st Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		existed := false
		if err := st.Update(r.PathValue("id"), func(cur *Record) *Record {
			existed = cur != nil
			return nil
		}); err != nil {
			writeError(w, log, r, storeError(err))
			return
		}
		if !existed {
			writeError(w, log, r, fmt.Errorf("%w: no card stored for this message", errNotFound))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// clickView is how a click state reads in the admin API.
type clickView struct {
	ButtonType string     `json:"button_type"`
	ButtonID   string     `json:"button_id"`
	Status     Status     `json:"status"`
	Reason     string     `json:"reason,omitempty"`
	Operator   string     `json:"operator,omitempty"`
	Started    time.Time  `json:"started"`
	Finished   *time.Time `json:"finished,omitempty"`
}

// handleClicks answers the allow list and the click states of a message.
func handleClicks(log *slog.Logger, st Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec, ok := st.Get(r.PathValue("id"))
		if !ok {
			writeError(w, log, r, fmt.Errorf("%w: nothing stored for this message", errNotFound))
			return
		}
		out := struct {
			MessageID string      `json:"message_id"`
			HasCard   bool        `json:"has_card"`
			Allow     []string    `json:"allow"`
			Clicks    []clickView `json:"clicks"`
		}{r.PathValue("id"), rec.Card != nil, rec.Allow, []clickView{}}
		if out.Allow == nil {
			out.Allow = []string{}
		}
		for _, c := range rec.Clicks {
			v := clickView{ButtonType: c.Key.ButtonType, ButtonID: c.Key.ButtonID, Status: c.Status,
				Reason: c.Reason, Operator: c.Operator, Started: c.Started}
			if !c.Finished.IsZero() {
				v.Finished = &c.Finished
			}
			out.Clicks = append(out.Clicks, v)
		}
		writeValue(w, http.StatusOK, out)
	})
}

// handleSendMessage sends a card as an interactive message and stores it
// under the message id the platform returns, with its allow list.
func handleSendMessage(log *slog.Logger, fc *feishuClient, st Store, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ReceiveIDType string          `json:"receive_id_type"`
			ReceiveID     string          `json:"receive_id"`
			Card          json.RawMessage `json:"card"`
			Allow         []string        `json:"allow"`
		}
		card, err := func() ([]byte, error) {
			body, err := readBody(w, r)
			if err != nil {
				return nil, err
			}
			if err := decodeJSON(body, &req); err != nil {
				return nil, err
			}
			if req.ReceiveID == "" {
				return nil, fmt.Errorf("%w: receive_id is required", errBadRequest)
			}
			if req.ReceiveIDType == "" {
				req.ReceiveIDType = "open_id"
			}
			switch req.ReceiveIDType {
			case "open_id", "user_id", "union_id", "email", "chat_id":
			default:
				return nil, fmt.Errorf("%w: receive_id_type must be open_id, user_id, union_id, email or chat_id", errBadRequest)
			}
			return compactCard(req.Card)
		}()
		if err == nil && fc == nil {
			err = fmt.Errorf("%w: sending needs app credentials: set FEISHU_APP_ID and FEISHU_APP_SECRET", errUnavailable)
		}
		if err != nil {
			writeError(w, log, r, err)
			return
		}
		id, err := fc.sendCard(r.Context(), req.ReceiveIDType, req.ReceiveID, card)
		if err != nil {
			log.ErrorContext(r.Context(), "sending a card failed", "err", err)
			out := map[string]any{"error": "feishu api: " + err.Error()}
			var ae *apiError
			if errors.As(err, &ae) {
				out["code"], out["msg"] = ae.Code, ae.Msg
			}
			writeValue(w, http.StatusBadGateway, out)
			return
		}
		done := renderDone(card)
		if err := st.Update(id, func(cur *Record) *Record { return cur.withCard(card, done, req.Allow, now()) }); err != nil {
			// The message is out; say so, or a retry would send it twice.
			log.ErrorContext(r.Context(), "card sent but not stored", "message_id", id, "err", err)
			writeValue(w, http.StatusServiceUnavailable, map[string]string{"message_id": id, "error": "the card was sent but could not be stored: PUT it to /cards/" + id})
			return
		}
		writeValue(w, http.StatusOK, map[string]string{"message_id": id})
	})
}
