package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"sync"
)

// Errors of the decryption step. All of them are bad input (400).
var (
	errBadBase64     = errors.New("encrypt is not valid base64")
	errBadCiphertext = errors.New("ciphertext is shorter than two blocks or not a multiple of the block size")
	errBadPadding    = errors.New("ciphertext has invalid PKCS#7 padding (wrong Encrypt Key?)")
)

// signer computes the platform's request signatures. It holds the secrets
// and derived keys, so they are computed once rather than per request.
type signer struct {
	verificationToken []byte
	encryptKey        []byte
	block             cipher.Block // AES-256 with SHA-256(encrypt key); nil without a key
}

func newSigner(verificationToken, encryptKey string) *signer {
	s := &signer{verificationToken: []byte(verificationToken), encryptKey: []byte(encryptKey)}
	if encryptKey != "" {
		key := sha256.Sum256([]byte(encryptKey))
		s.block, _ = aes.NewCipher(key[:]) // a 32-byte key never fails
	}
	return s
}

// hasher is a hash state with memory for what it is fed besides the body
// and for its sum, reused: allocations per request are garbage on the hot
// path.
type hasher struct {
	h   hash.Hash
	buf []byte
}

var (
	sha1Pool   = sync.Pool{New: func() any { return &hasher{h: sha1.New()} }}
	sha256Pool = sync.Pool{New: func() any { return &hasher{h: sha256.New()} }}
)

// sum returns H(timestamp ‖ nonce ‖ secret ‖ body), the construction both
// generations use (PROTOCOL §3), in d's memory.
func (d *hasher) sum(timestamp, nonce string, secret, body []byte) []byte {
	d.h.Reset()
	d.buf = append(append(append(d.buf[:0], timestamp...), nonce...), secret...)
	d.h.Write(d.buf)
	d.h.Write(body)
	d.buf = d.h.Sum(d.buf[:0])
	return d.buf
}

// release returns d to pool, without the memory an outsized timestamp or
// nonce made it grow to.
func (d *hasher) release(pool *sync.Pool) {
	if cap(d.buf) > 4<<10 {
		d.buf = nil
	}
	pool.Put(d)
}

// digest returns the sum in memory of its own, for signing.
func digest(pool *sync.Pool, timestamp, nonce string, secret, body []byte) []byte {
	d := pool.Get().(*hasher)
	defer d.release(pool)
	return append([]byte(nil), d.sum(timestamp, nonce, secret, body)...)
}

// digestMatches reports in constant time whether the hex signature sig is
// the sum, for verifying: without an allocation.
func digestMatches(pool *sync.Pool, sig, timestamp, nonce string, secret, body []byte) bool {
	d := pool.Get().(*hasher)
	defer d.release(pool)
	return signatureMatches(sig, d.sum(timestamp, nonce, secret, body))
}

// signatureMatches reports in constant time whether the hex signature sig
// equals want. Upper-case hex is accepted.
func signatureMatches(sig string, want []byte) bool {
	got := make([]byte, hex.DecodedLen(len(sig)))
	if _, err := hex.Decode(got, []byte(sig)); err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(got, want) == 1
}

// legacySignature is the SHA-1 signature of a legacy callback (PROTOCOL §3.1).
func (s *signer) legacySignature(timestamp, nonce string, body []byte) []byte {
	return digest(&sha1Pool, timestamp, nonce, s.verificationToken, body)
}

// newSignature is the SHA-256 signature of a new-generation callback (PROTOCOL §3.2).
func (s *signer) newSignature(timestamp, nonce string, body []byte) []byte {
	return digest(&sha256Pool, timestamp, nonce, s.encryptKey, body)
}

// legacySigned and newSigned report whether sig, in hex, is the signature.
func (s *signer) legacySigned(sig, timestamp, nonce string, body []byte) bool {
	return digestMatches(&sha1Pool, sig, timestamp, nonce, s.verificationToken, body)
}

func (s *signer) newSigned(sig, timestamp, nonce string, body []byte) bool {
	return digestMatches(&sha256Pool, sig, timestamp, nonce, s.encryptKey, body)
}

// decryptInto opens an {"encrypt":…} envelope (PROTOCOL §4): base64, IV in
// the first block, AES-256-CBC, strict PKCS#7 padding. It works in buf's
// memory, or in memory of its own when buf is too small, and returns that
// memory, for reuse, as used.
func (s *signer) decryptInto(buf, encrypted []byte) (plain, used []byte, err error) {
	used = buf[:cap(buf)]
	if n := base64.StdEncoding.DecodedLen(len(encrypted)); n > len(used) {
		used = make([]byte, n)
	}
	n, err := base64.StdEncoding.Decode(used, encrypted)
	if err != nil {
		return nil, used, errBadBase64
	}
	plain, err = decryptCBC(s.block, used[:n])
	return plain, used, err
}

func decryptCBC(block cipher.Block, raw []byte) ([]byte, error) {
	bs := block.BlockSize()
	if len(raw) < 2*bs || len(raw)%bs != 0 {
		return nil, errBadCiphertext
	}
	iv, data := raw[:bs], raw[bs:]
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(data, data)
	n := int(data[len(data)-1])
	if n == 0 || n > bs {
		return nil, errBadPadding
	}
	pad := data[len(data)-n:]
	for _, b := range pad {
		if int(b) != n {
			return nil, errBadPadding
		}
	}
	return data[:len(data)-n], nil
}

// encrypt is the inverse of decrypt, used by the simulator and the tests to
// build requests exactly as the platform does. iv must be one block long.
func (s *signer) encrypt(plaintext, iv []byte) string {
	bs := s.block.BlockSize()
	n := bs - len(plaintext)%bs
	buf := make([]byte, bs+len(plaintext)+n)
	copy(buf, iv)
	copy(buf[bs:], plaintext)
	for i := len(buf) - n; i < len(buf); i++ {
		buf[i] = byte(n)
	}
	cipher.NewCBCEncrypter(s.block, iv).CryptBlocks(buf[bs:], buf[bs:])
	return base64.StdEncoding.EncodeToString(buf)
}
