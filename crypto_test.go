package main

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
)

// vectors are the published test vectors in testdata/vectors.json.
type vectorSet struct {
	DecryptAligned   decryptVector `json:"decrypt_aligned"`
	DecryptChallenge decryptVector `json:"decrypt_challenge"`
	DecryptHello     decryptVector `json:"decrypt_hello"`
	LegacySignature  struct {
		Body, Nonce, Signature, Timestamp string
		VerificationToken                 string `json:"verification_token"`
	} `json:"legacy_signature"`
	NewSignature struct {
		Body, Nonce, Signature, Timestamp string
		EncryptKey                        string `json:"encrypt_key"`
	} `json:"new_signature"`
}

type decryptVector struct {
	Encrypt    string `json:"encrypt"`
	EncryptKey string `json:"encrypt_key"`
	Plaintext  string `json:"plaintext"`
}

func loadVectors(t testing.TB) vectorSet {
	t.Helper()
	data, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectorSet
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDecryptVectors(t *testing.T) {
	v := loadVectors(t)
	for name, vec := range map[string]decryptVector{
		"hello":     v.DecryptHello,
		"challenge": v.DecryptChallenge,
		"aligned":   v.DecryptAligned,
	} {
		t.Run(name, func(t *testing.T) {
			got, err := newSigner("", vec.EncryptKey).decrypt(vec.Encrypt)
			if err != nil {
				t.Fatalf("decrypt: %v", err)
			}
			if string(got) != vec.Plaintext {
				t.Errorf("got %q, want %q", got, vec.Plaintext)
			}
		})
	}
}

func TestEncryptRoundTrip(t *testing.T) {
	s := newSigner("", "some key")
	for _, n := range []int{0, 1, 15, 16, 17, 1000} {
		plain := make([]byte, n)
		for i := range plain {
			plain[i] = byte('a' + i%26)
		}
		got, err := s.decrypt(s.encrypt(plain, make([]byte, 16)))
		if err != nil || string(got) != string(plain) {
			t.Errorf("%d bytes: got %q, %v; want the plaintext back", n, got, err)
		}
	}
}

func TestDecryptBadInput(t *testing.T) {
	s := newSigner("", "test key")
	block := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	// A valid ciphertext whose last byte is flipped: its padding breaks.
	good, _ := base64.StdEncoding.DecodeString(loadVectors(t).DecryptHello.Encrypt)
	good[len(good)-1] ^= 0xff
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"not base64", "%%%", errBadBase64},
		{"empty", "", errBadCiphertext},
		{"one block", block(16), errBadCiphertext},
		{"not a multiple of 16", block(40), errBadCiphertext},
		{"bad padding", base64.StdEncoding.EncodeToString(good), errBadPadding},
		{"wrong key", newSigner("", "other key").encrypt([]byte("hello"), make([]byte, 16)), errBadPadding},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.decrypt(tc.in)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSignatureVectors(t *testing.T) {
	v := loadVectors(t)
	l := v.LegacySignature
	got := newSigner(l.VerificationToken, "").legacySignature(l.Timestamp, l.Nonce, []byte(l.Body))
	if hex.EncodeToString(got) != l.Signature {
		t.Errorf("legacy: got %x, want %s", got, l.Signature)
	}
	n := v.NewSignature
	got = newSigner("", n.EncryptKey).newSignature(n.Timestamp, n.Nonce, []byte(n.Body))
	if hex.EncodeToString(got) != n.Signature {
		t.Errorf("new: got %x, want %s", got, n.Signature)
	}
	// Verifying in a hasher's own memory, one after the other.
	ls, ns := newSigner(l.VerificationToken, ""), newSigner("", n.EncryptKey)
	for range 2 {
		if !ls.legacySigned(l.Signature, l.Timestamp, l.Nonce, []byte(l.Body)) || !ns.newSigned(n.Signature, n.Timestamp, n.Nonce, []byte(n.Body)) {
			t.Error("a vector's signature does not verify")
		}
		if ls.legacySigned(l.Signature, l.Timestamp, l.Nonce+"x", []byte(l.Body)) || ns.newSigned(n.Signature, n.Timestamp, n.Nonce, []byte(n.Body+" ")) {
			t.Error("a changed request verifies")
		}
	}
}

func TestSignatureMatches(t *testing.T) {
	want := []byte{0xab, 0xcd}
	for sig, ok := range map[string]bool{"abcd": true, "ABCD": true, "abce": false, "abcd00": false, "zz": false, "": false} {
		if got := signatureMatches(sig, want); got != ok {
			t.Errorf("signatureMatches(%q): got %v, want %v", sig, got, ok)
		}
	}
}

// decrypt is decryptInto for the tests: in memory of its own.
func (s *signer) decrypt(encrypted string) ([]byte, error) {
	plain, _, err := s.decryptInto(nil, []byte(encrypted))
	return plain, err
}

// TestHasherReleaseDropsOutsizedMemory: a request with a huge timestamp or
// nonce must not leave a pooled hasher holding its memory.
func TestHasherReleaseDropsOutsizedMemory(t *testing.T) {
	var pool sync.Pool
	d := &hasher{h: sha1.New()}
	d.sum("1700000000", strings.Repeat("n", 64<<10), []byte("tok"), []byte("{}"))
	d.release(&pool)
	if d.buf != nil {
		t.Errorf("a hasher kept %d bytes after a 64 KB nonce", cap(d.buf))
	}
	d.sum("1700000000", "nonce", []byte("tok"), []byte("{}"))
	d.release(&pool)
	if d.buf == nil {
		t.Error("a hasher dropped its memory after an ordinary request")
	}
}
