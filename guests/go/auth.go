package main

// Herd membership: the link handshake of herd-core's auth.rs, byte for byte.
//
//	opener → acceptor   PEER Alford 3b9f0c2e5d7a41c68e0f2b4d6a8c1e3f
//	acceptor → opener   HERD Hamilton 6d1e08a4c3b5f7e29d0c1b3a5f7e9d2c <proof("accept"), 64 hex digits>
//	opener → acceptor   AUTH <proof("open"), 64 hex digits>
//	opener → acceptor   AT …                        (the acceptor never sends again)
//
//	proof(role) = HMAC-SHA256(key, "herdbench link v1" ‖ role ‖ len ‖ opener ‖ len ‖ acceptor
//	                               ‖ opener's nonce ‖ acceptor's nonce)

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

const (
	minKeyBytes = 16
	nonceBytes  = 16
	proofBytes  = 32
	linkContext = "herdbench link v1"
	roleOpen    = "open"
	roleAccept  = "accept"
)

// readHerdKey reads a key file: hex digits (surrounding white space ignored), at least 128 bits.
func readHerdKey(path string) ([]byte, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the herd key file: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(text)))
	if err != nil {
		return nil, fmt.Errorf("the herd key file must hold only hex digits (e.g. 64 of them, from `harness keygen`)")
	}
	if len(key) < minKeyBytes {
		return nil, fmt.Errorf("the herd key is %d bytes; at least %d (32 hex digits) are needed", len(key), minKeyBytes)
	}
	return key, nil
}

// proof is the MAC that proves the sender holds key, for one handshake between opener and
// acceptor with these nonces. Names are length-prefixed so no two pairs hash alike.
func proof(key []byte, role, opener, acceptor string, openerNonce, acceptorNonce []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(linkContext))
	mac.Write([]byte(role))
	for _, name := range [2]string{opener, acceptor} {
		n := len(name)
		if n > 255 {
			n = 255 // hashed whole; the prefix saturates, as herd-core's does
		}
		mac.Write([]byte{byte(n)})
		mac.Write([]byte(name))
	}
	mac.Write(openerNonce)
	mac.Write(acceptorNonce)
	return mac.Sum(nil)
}

// newNonce is 16 fresh random bytes. A server without randomness must not pretend to
// authenticate: it stops.
func newNonce() []byte {
	n := make([]byte, nonceBytes)
	if _, err := rand.Read(n); err != nil {
		panic("no randomness from the operating system: " + err.Error())
	}
	return n
}

// decodeFixed decodes exactly n bytes of hex (either case), or nil.
func decodeFixed(text string, n int) []byte {
	if len(text) != 2*n {
		return nil
	}
	b, err := hex.DecodeString(text)
	if err != nil {
		return nil
	}
	return b
}

// parseAccept parses the acceptor's answer `HERD <name> <nonce> <proof>` (single spaces).
func parseAccept(line []byte) (name string, nonce, mac []byte, ok bool) {
	f := strings.Split(strings.TrimRight(string(line), "\r"), " ")
	if len(f) != 4 || f[0] != "HERD" {
		return "", nil, nil, false
	}
	nonce, mac = decodeFixed(f[2], nonceBytes), decodeFixed(f[3], proofBytes)
	return f[1], nonce, mac, nonce != nil && mac != nil
}

// equalMAC compares proofs in constant time.
func equalMAC(a, b []byte) bool { return hmac.Equal(a, b) }

// hexAppend appends the lower-case hex of b.
func hexAppend(dst, b []byte) []byte {
	const digits = "0123456789abcdef"
	for _, c := range b {
		dst = append(dst, digits[c>>4], digits[c&15])
	}
	return dst
}
