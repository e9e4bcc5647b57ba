package ike

// Counters is a snapshot of the endpoint's counters (Stats), safe to take
// from any goroutine (status, metrics) while the endpoint runs.
func (e *Endpoint) Counters() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := e.Stats
	st.HalfOpen, st.FragmentBytes = len(e.half.byKey), e.fragBytes
	st.Cookies += e.scr.cookies.Load() // answered by Screen, without the lock
	st.Dropped += e.scr.dropped.Load()
	return st
}
