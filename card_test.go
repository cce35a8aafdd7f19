package main

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
)

// jsonOf decodes JSON for comparison by meaning.
func jsonOf(t testing.TB, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return v
}

func sameJSON(t testing.TB, got, want []byte) {
	t.Helper()
	if !reflect.DeepEqual(jsonOf(t, got), jsonOf(t, want)) {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// div is the JSON 1.0 state element as the issue spells it out.
func div(text string) string {
	return `{"tag":"div","fields":[{"is_short":false,"text":{"tag":"lark_md","content":"` + text + `"}}]}`
}

const zhDone = `[{"tag":"div","fields":[{"is_short":false,"text":{"tag":"lark_md","content":"已完成"}}]}]`

func TestDoneCard(t *testing.T) {
	for _, tc := range []struct {
		name, card, want string
	}{
		{
			"i18n locales each in their language",
			`{"config":{"update_multi":true},"header":{"title":{"tag":"plain_text","content":"t"}},"i18n_elements":{"zh_cn":[{"tag":"hr"}],"en_us":[],"ja_jp":[],"zh_hk":[],"zh_tw":[],"fr_fr":[]}}`,
			`{"config":{"update_multi":true},"header":{"title":{"tag":"plain_text","content":"t"}},"i18n_elements":{"zh_cn":` + zhDone +
				`,"en_us":[` + div("Done") + `],"ja_jp":[` + div("完了") + `],"zh_hk":[` + div("已完成") + `],"zh_tw":[` + div("已完成") + `],"fr_fr":[` + div("Done") + `]}}`,
		},
		{
			"elements only",
			`{"config":{"wide_screen_mode":true},"elements":[{"tag":"action","actions":[]}]}`,
			`{"config":{"wide_screen_mode":true},"elements":` + zhDone + `}`,
		},
		{
			"JSON 2.0",
			`{"schema":"2.0","config":{"update_multi":true},"body":{"direction":"vertical","elements":[{"tag":"button"}]}}`,
			`{"schema":"2.0","config":{"update_multi":true},"body":{"direction":"vertical","elements":[{"tag":"markdown","content":"已完成"}]}}`,
		},
		{
			"JSON 2.0 without body",
			`{"schema":"2.0"}`,
			`{"schema":"2.0","body":{"elements":[{"tag":"markdown","content":"已完成"}]}}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := doneCard([]byte(tc.card))
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, got, []byte(tc.want))
		})
	}
}

func TestDoneCardFixtures(t *testing.T) {
	orig := jsonOf(t, readFixture(t, "card_v1_i18n.json")).(map[string]any)
	got, err := doneCard(readFixture(t, "card_v1_i18n.json"))
	if err != nil {
		t.Fatal(err)
	}
	card := jsonOf(t, got).(map[string]any)
	for _, k := range []string{"config", "header"} {
		if !reflect.DeepEqual(card[k], orig[k]) {
			t.Errorf("%s: got %v, want it kept as %v", k, card[k], orig[k])
		}
	}
	els := card["i18n_elements"].(map[string]any)
	sameJSON(t, mustMarshal(els["zh_cn"]), []byte(zhDone))
	sameJSON(t, mustMarshal(els["en_us"]), []byte("["+div("Done")+"]"))
	if !strings.Contains(string(got), `"is_short":false`) {
		t.Errorf("is_short:false must be written out: %s", got)
	}

	got, err = doneCard(readFixture(t, "card_v2.json"))
	if err != nil {
		t.Fatal(err)
	}
	v2 := jsonOf(t, got).(map[string]any)
	sameJSON(t, mustMarshal(v2["body"]), []byte(`{"elements":[{"tag":"markdown","content":"已完成"}]}`))
	if v2["schema"] != "2.0" || v2["header"] == nil {
		t.Errorf("schema and header must be kept: %s", got)
	}
}

func TestDoneCardWithoutStoredCard(t *testing.T) {
	got, err := doneCard(nil)
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, got, []byte(`{"elements":`+zhDone+`}`))
}

func TestProgressAndFailedCards(t *testing.T) {
	card := `{"header":{"title":{"content":"t"}},"i18n_elements":{"zh_cn":[{"tag":"action","actions":[{"tag":"button"}]}],"en_us":[{"tag":"hr"}]}}`
	got, err := progressCard([]byte(card))
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, got, []byte(`{"header":{"title":{"content":"t"}},"i18n_elements":{"zh_cn":[`+div("全量发布进行中…")+`],"en_us":[`+div("Full release in progress…")+`]}}`))

	got, err = failedCard([]byte(card), "exit 3")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, got, []byte(`{"header":{"title":{"content":"t"}},"i18n_elements":{"zh_cn":[`+div("全量发布失败：exit 3")+
		`,{"tag":"action","actions":[{"tag":"button"}]}],"en_us":[`+div("Full release failed: exit 3")+`,{"tag":"hr"}]}}`))

	got, err = failedCard([]byte(`{"schema":"2.0","body":{"elements":[{"tag":"button"}]}}`), "no")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, got, []byte(`{"schema":"2.0","body":{"elements":[{"tag":"markdown","content":"全量发布失败：no"},{"tag":"button"}]}}`))
}

func TestRewriteBadCard(t *testing.T) {
	for _, card := range []string{`[]`, `"x"`, `null`, `{`} {
		if _, err := doneCard([]byte(card)); err == nil {
			t.Errorf("doneCard(%s): got no error, want one", card)
		}
	}
}

func TestIsExclusive(t *testing.T) {
	for card, want := range map[string]bool{
		`{"config":{"update_multi":true}}`:  false,
		`{"config":{"update_multi":false}}`: true,
		`{"elements":[]}`:                   true,
		`{"schema":"2.0"}`:                  false,
	} {
		if got := isExclusive([]byte(card)); got != want {
			t.Errorf("isExclusive(%s): got %v, want %v", card, got, want)
		}
	}
}

func TestAnswer(t *testing.T) {
	card := []byte(`{"elements":[]}`)
	for _, tc := range []struct {
		name string
		gen  Generation
		t    *toast
		card []byte
		want string
	}{
		{"legacy card", Legacy, nil, card, `{"elements":[]}`},
		{"legacy card drops toast", Legacy, &toastRepeat, card, `{"elements":[]}`},
		{"legacy toast only", Legacy, &toastNotAllowed, nil,
			`{"toast":{"type":"error","content":"你没有权限执行此操作","i18n":{"zh_cn":"你没有权限执行此操作","en_us":"You are not allowed to do this"}}}`},
		{"new toast and card", New, &toastDone, card,
			`{"toast":{"type":"success","content":"已完成","i18n":{"zh_cn":"已完成","en_us":"Done"}},"card":{"type":"raw","data":{"elements":[]}}}`},
		{"new card only", New, nil, card, `{"card":{"type":"raw","data":{"elements":[]}}}`},
		{"nothing", New, nil, nil, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sameJSON(t, answer(tc.gen, tc.t, tc.card).bytes(), []byte(tc.want))
		})
	}
}

func TestTruncateReason(t *testing.T) {
	long := strings.Repeat("错", 300)
	got := []rune(truncateReason(long))
	if len(got) != 200 {
		t.Errorf("got %d characters, want 200", len(got))
	}
	if truncateReason("short") != "short" {
		t.Error("a short reason must be kept as it is")
	}
}

func TestParseClick(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		want    Click
		wantErr bool
	}{
		{
			name: "legacy",
			body: `{"open_id":"ou_1","user_id":"u1","open_message_id":"om_1","open_chat_id":"oc_1","tenant_key":"tk","token":"c-1","action":{"value":{"button_type":"public_publish","button_id":"b1"},"tag":"button"}}`,
			want: Click{Generation: Legacy, OpenID: "ou_1", UserID: "u1", MessageID: "om_1", ChatID: "oc_1", TenantKey: "tk", Token: "c-1",
				Tag: "button", Value: json.RawMessage(`{"button_type":"public_publish","button_id":"b1"}`), ButtonType: "public_publish", ButtonID: "b1"},
		},
		{
			name: "new",
			body: `{"schema":"2.0","header":{"event_id":"e1","token":"v","create_time":1603977298000,"event_type":"card.action.trigger","tenant_key":"tk"},"event":{"operator":{"tenant_key":"tk","user_id":"u1","open_id":"ou_1","union_id":"on_1"},"token":"c-2","action":{"value":{"button_type":"public_publish","button_id":7},"tag":"button"},"host":"im_message","context":{"open_message_id":"om_1","open_chat_id":"oc_1"}}}`,
			want: Click{Generation: New, OpenID: "ou_1", UserID: "u1", UnionID: "on_1", MessageID: "om_1", ChatID: "oc_1", TenantKey: "tk", Token: "c-2",
				Tag: "button", Value: json.RawMessage(`{"button_type":"public_publish","button_id":7}`), ButtonType: "public_publish", ButtonID: "7", EventID: "e1"},
		},
		{
			name: "string value",
			body: `{"open_id":"ou_1","open_message_id":"om_1","action":{"value":"public_publish","tag":"button"}}`,
			want: Click{Generation: Legacy, OpenID: "ou_1", MessageID: "om_1", Tag: "button", Value: json.RawMessage(`"public_publish"`)},
		},
		{
			name: "button_type not a string",
			body: `{"open_message_id":"om_1","action":{"value":{"button_type":["public_publish"]}}}`,
			want: Click{Generation: Legacy, MessageID: "om_1", Value: json.RawMessage(`{"button_type":["public_publish"]}`)},
		},
		{name: "publish without message id", body: `{"action":{"value":{"button_type":"public_publish"}}}`, wantErr: true},
		{name: "value object is broken", body: `{"action":{"value":{"button_type":1,}}}`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in inbound
			err := decodeInbound([]byte(tc.body), &in)
			var c Click
			if err == nil {
				c, err = in.click(in.kind())
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(c, tc.want) {
				t.Errorf("got  %+v\nwant %+v", c, tc.want)
			}
		})
	}
}

func TestDecodeInboundShapes(t *testing.T) {
	for _, body := range []string{``, `null`, `[]`, `"x"`, `{"open_id":5}`, `{"action":"x"}`, `{"schema":"2.0","event":[]}`, `{"encrypt":1}`} {
		var in inbound
		if err := decodeInbound([]byte(body), &in); err == nil {
			t.Errorf("decodeInbound(%s): got no error, want one", body)
		}
	}
}

func TestDoneCardIsIdempotent(t *testing.T) {
	// A done card is its own done rendering: the store relies on it.
	for _, name := range []string{"card_v1_i18n.json", "card_v2.json"} {
		once, _ := doneCard(readFixture(t, name))
		twice, _ := doneCard(once)
		sameJSON(t, twice, once)
	}
	once, _ := doneCard([]byte(`{"elements":[{"tag":"hr"}]}`))
	twice, _ := doneCard(once)
	sameJSON(t, twice, once)
}

func TestRenderFallsBackToTheBareState(t *testing.T) {
	bad := []byte(`["not a card"]`)
	for name, tc := range map[string]struct{ got, want []byte }{
		"done":     {renderDone(bad), []byte(`{"elements":[` + div("已完成") + `]}`)},
		"progress": {renderProgress(bad), []byte(`{"elements":[` + div("全量发布进行中…") + `]}`)},
		"failed":   {renderFailed(bad, "x"), []byte(`{"elements":[` + div("全量发布失败：x") + `]}`)},
	} {
		t.Run(name, func(t *testing.T) { sameJSON(t, tc.got, tc.want) })
	}
	sameJSON(t, renderFailed([]byte(`{"elements":[{"tag":"hr"}]}`), "x"), []byte(`{"elements":[`+div("全量发布失败：x")+`,{"tag":"hr"}]}`))
}
