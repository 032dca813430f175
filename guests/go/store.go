package main

// The location store of herd-core's store.rs: the newest AT line per client, bounded by a TTL
// and by a cap on clients, in 16 shards behind short mutexes (herd-core's Herd shards the same
// way, with the same hash, so both evict the same clients at the same cap).
//
// Entries are linked in store order, oldest first: the TTL counts from store time, so expired
// entries are always at the front and leave as updates arrive, with no sweep; and when a shard
// holds its share of max_clients, a new client evicts the front entry, the one stored longest ago.

import (
	"strings"
	"sync"
)

const storeShards = 16

type entry struct {
	client     string // the map key (its own copy, so no request line is kept alive)
	line       string // the AT line, newline included: WHATSAT's first line, byte for byte
	time       nanos  // the client's time: the newest wins
	storedAt   int64  // when this server stored it, ns since the epoch (the TTL counts from here)
	prev, next *entry // store order
}

type storeShard struct {
	mu         sync.Mutex
	byClient   map[string]*entry
	head, tail *entry // stored longest ago, newest
	max        int
}

type locationStore struct {
	shards [storeShards]storeShard
	ttl    int64 // ns
}

// update results.
const (
	ignored = iota // not newer than what is held: nothing changed, nothing is flooded
	stored
	storedEvicting // stored a new client, and the client stored longest ago was evicted
)

func newLocationStore(ttlSecs uint64, maxClients int) *locationStore {
	s := &locationStore{ttl: 1<<63 - 1}
	if ttlSecs < uint64(s.ttl)/1e9 {
		s.ttl = int64(ttlSecs) * 1e9
	}
	perShard := (maxClients + storeShards - 1) / storeShards
	if perShard < 1 {
		perShard = 1
	}
	for i := range s.shards {
		s.shards[i].byClient = make(map[string]*entry)
		s.shards[i].max = perShard
	}
	return s
}

// shard picks a client's shard with FNV-1a, as herd-core does.
func (s *locationStore) shard(client string) *storeShard {
	h := uint64(0xcbf29ce484222325)
	for i := 0; i < len(client); i++ {
		h = (h ^ uint64(client[i])) * 0x100000001b3
	}
	return &s.shards[h%storeShards]
}

// update stores line (newline included) for client if its time is newer than what is held (or
// what is held expired). Only stored updates are flooded.
func (s *locationStore) update(client, line string, t nanos, now int64) int {
	sh := s.shard(client)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.expire(now, s.ttl)
	if e, ok := sh.byClient[client]; ok {
		if now-e.storedAt <= s.ttl && e.time.cmp(t) >= 0 {
			return ignored
		}
		e.line, e.time, e.storedAt = line, t, now
		sh.unlink(e)
		sh.pushBack(e)
		return stored
	}
	result := stored
	if len(sh.byClient) >= sh.max {
		sh.remove(sh.head)
		result = storedEvicting
	}
	e := &entry{client: strings.Clone(client), line: line, time: t, storedAt: now}
	sh.byClient[e.client] = e
	sh.pushBack(e)
	return result
}

// get is the live AT line for client (newline included), or "".
func (s *locationStore) get(client string, now int64) string {
	sh := s.shard(client)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.byClient[client]; ok && now-e.storedAt <= s.ttl {
		return e.line
	}
	return ""
}

func (sh *storeShard) expire(now, ttl int64) {
	for sh.head != nil && now-sh.head.storedAt > ttl {
		sh.remove(sh.head)
	}
}

func (sh *storeShard) remove(e *entry) {
	delete(sh.byClient, e.client)
	sh.unlink(e)
}

func (sh *storeShard) unlink(e *entry) {
	if e.prev == nil {
		sh.head = e.next
	} else {
		e.prev.next = e.next
	}
	if e.next == nil {
		sh.tail = e.prev
	} else {
		e.next.prev = e.prev
	}
	e.prev, e.next = nil, nil
}

func (sh *storeShard) pushBack(e *entry) {
	e.prev = sh.tail
	if sh.tail == nil {
		sh.head = e
	} else {
		sh.tail.next = e
	}
	sh.tail = e
}
