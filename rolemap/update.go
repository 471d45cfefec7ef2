package rolemap

import (
	"fmt"
	"sync"
)

// updateMu serialises Update calls of this process: each reads the map,
// changes it and replaces it, and two at once would lose one's change.
// Different processes must not update one map concurrently (the peer daemon
// is the only writer of a server's map at run time).
var updateMu sync.Mutex

// Update rebuilds the role map at path with the entries in changes (an
// account missing from the map is appended), atomically (Build). It returns
// the entries the changed accounts had before (Role Unknown: absent). The
// records keep their order otherwise.
func Update(path string, changes map[string]Entry) (map[string]Entry, error) {
	updateMu.Lock()
	defer updateMu.Unlock()
	m, err := Open(path)
	if err != nil {
		return nil, err
	}
	recs := make([]Record, 0, m.Len()+len(changes))
	old := make(map[string]Entry, len(changes))
	for r, err := range m.All() {
		if err != nil {
			m.Close()
			return nil, err
		}
		if e, ok := changes[r.Account]; ok {
			old[r.Account] = r.Entry
			r.Entry = e
		}
		recs = append(recs, r)
	}
	m.Close()
	for a, e := range changes {
		if _, ok := old[a]; !ok {
			old[a] = Entry{}
			recs = append(recs, Record{Account: a, Entry: e})
		}
	}
	if err := Build(path, recs); err != nil {
		return nil, fmt.Errorf("rolemap: update: %w", err)
	}
	return old, nil
}
