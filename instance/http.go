package instance

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"clb/policy"
)

// servedBy names the instance in every response, SIP and HTTP.
const servedBy = "X-CLB-Served-By"

// handler is the HTTP side: the app clb routes to (a per-session counter and
// task list) and the partners' replication endpoints under /_clb/.
func (in *Instance) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(servedBy, in.name)
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /_clb/state/{key}", in.internal(func(w http.ResponseWriter, r *http.Request) {
		st := in.store.get(r.PathValue("key"))
		if st == nil {
			http.Error(w, "not held", http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, st)
	}))
	mux.HandleFunc("PUT /_clb/state/{key}", in.internal(func(w http.ResponseWriter, r *http.Request) {
		var st State
		if err := json.NewDecoder(io.LimitReader(r.Body, maxState)).Decode(&st); err != nil || st.Key != r.PathValue("key") {
			http.Error(w, "want the key's state as JSON", http.StatusBadRequest)
			return
		}
		if err := in.store.receive(&st, r.Header.Get("X-From")); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("DELETE /_clb/state/{key}", in.internal(func(w http.ResponseWriter, r *http.Request) {
		in.store.forget(r.PathValue("key"))
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("GET /_clb/dump", in.internal(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, struct {
			Name string `json:"name"`
			Keys []Held `json:"keys"`
		}{in.name, in.store.dump()})
	}))
	mux.HandleFunc("POST /_clb/hangup", in.internal(in.hangup))
	mux.HandleFunc("POST /_clb/call", in.internal(in.call))
	mux.HandleFunc("/counter", in.app(in.counter))
	mux.HandleFunc("/tasks", in.app(in.tasks))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(servedBy, in.name)
		if r.URL.Path == "/" && r.Method == "GET" {
			_, _ = io.WriteString(w, "clb-instance "+in.name+": /counter, /tasks\n")
			return
		}
		http.NotFound(w, r)
	})
	return mux
}

// hangup ends calls the instance answered, as a callee hanging up: the one
// ?call-id names, or every one; the answer maps each Call-ID to the final
// status of its BYE (404: no such call; 504: no final answer in time).
func (in *Instance) hangup(w http.ResponseWriter, r *http.Request) {
	if in.uas == nil {
		http.Error(w, "no SIP", http.StatusNotFound)
		return
	}
	ids := []string{r.URL.Query().Get("call-id")}
	if ids[0] == "" {
		ids = in.uas.calls()
	}
	if len(ids) == 0 {
		http.Error(w, "no call to hang up", http.StatusNotFound)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 8*time.Second)
	defer cancel()
	status := map[string]int{}
	for _, id := range ids {
		code, err := in.uas.hangup(ctx, id)
		switch {
		case errors.Is(err, errUnknownCall):
			http.Error(w, "no call "+id, http.StatusNotFound)
			return
		case err != nil:
			http.Error(w, "BYE of "+id+": "+err.Error(), http.StatusGatewayTimeout)
			return
		}
		status[id] = code
	}
	writeJSON(w, http.StatusOK, status)
}

// call places a call to the address of record ?aor names (registered with
// the instance, through clb): the answer is its Call-ID and the INVITE's
// final status (404: not registered; 504: no final answer in time).
func (in *Instance) call(w http.ResponseWriter, r *http.Request) {
	if in.uas == nil {
		http.Error(w, "no SIP", http.StatusNotFound)
		return
	}
	aor := r.URL.Query().Get("aor")
	ctx, cancel := context.WithTimeout(r.Context(), 16*time.Second)
	defer cancel()
	id, code, err := in.uas.call(ctx, aor)
	switch {
	case errors.Is(err, errNotRegistered):
		http.Error(w, aor+" is not registered", http.StatusNotFound)
	case err != nil:
		http.Error(w, "INVITE to "+aor+": "+err.Error(), http.StatusGatewayTimeout)
	default:
		writeJSON(w, http.StatusOK, map[string]any{"call_id": id, "status": code})
	}
}

// internal guards the partners' endpoints: a request that came through clb
// (it carries X-CLB-Instance) is a client's, and is refused.
func (in *Instance) internal(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(servedBy, in.name)
		if r.Header.Get("X-CLB-Instance") != "" {
			http.Error(w, "not through the load balancer", http.StatusForbidden)
			return
		}
		h(w, r)
	}
}

// app takes the session of a request clb sent, calls h with it, and commits
// what h changed.
func (in *Instance) app(h func(r *http.Request, st *State) (status int, changed bool, body any)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(servedBy, in.name)
		hd, ok := clbHeaders(r.Header.Get)
		if !ok {
			http.Error(w, "no X-CLB-Key: this app is reached through clb", http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		sess, err := in.store.acquire(ctx, hd)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		status, changed, body := h(r, sess.state)
		if changed {
			sess.commit(ctx, true)
		} else {
			sess.release(ctx)
		}
		writeJSON(w, status, body)
	}
}

// clbHeaders reads what clb says of a request's key (SPEC section 4).
func clbHeaders(get func(string) string) (headers, bool) {
	key, ok := policy.UnescapeKey(get("X-CLB-Key"))
	if !ok || get("X-CLB-Key") == "" {
		return headers{}, false
	}
	return headers{key: key, replica: get("X-CLB-Replica"), previous: get("X-CLB-Previous")}, true
}

// Counter is the answer of the counter endpoints.
type Counter struct {
	Key     string `json:"key"`
	Counter int64  `json:"counter"`
}

// counter: GET reads it; PUT ?next=N sets it to N when it is N-1 (and
// answers N again when it is N already: the request may be sent twice), 409
// otherwise; POST adds one.
func (in *Instance) counter(r *http.Request, st *State) (int, bool, any) {
	switch r.Method {
	case "GET":
		return http.StatusOK, false, Counter{st.Key, st.Counter}
	case "POST":
		st.Counter++
		return http.StatusOK, true, Counter{st.Key, st.Counter}
	case "PUT":
		next, err := strconv.ParseInt(r.URL.Query().Get("next"), 10, 64)
		switch {
		case err != nil:
			return http.StatusBadRequest, false, errorBody("next: want a number")
		case next == st.Counter:
			return http.StatusOK, false, Counter{st.Key, st.Counter}
		case next != st.Counter+1:
			return http.StatusConflict, false, Counter{st.Key, st.Counter}
		}
		st.Counter = next
		return http.StatusOK, true, Counter{st.Key, st.Counter}
	}
	return http.StatusMethodNotAllowed, false, errorBody("GET, PUT or POST")
}

// Tasks is the answer of the task list endpoints.
type Tasks struct {
	Key   string   `json:"key"`
	Tasks []string `json:"tasks"`
}

// maxTasks bounds a session's task list.
const maxTasks = 1000

// tasks: GET lists them, POST adds the body as a task, DELETE ?i=N removes
// the Nth.
func (in *Instance) tasks(r *http.Request, st *State) (int, bool, any) {
	switch r.Method {
	case "GET":
		return http.StatusOK, false, Tasks{st.Key, append([]string{}, st.Tasks...)}
	case "POST":
		b, err := io.ReadAll(io.LimitReader(r.Body, 4096))
		task := strings.TrimSpace(string(b))
		if err != nil || task == "" {
			return http.StatusBadRequest, false, errorBody("want the task as the body")
		}
		if len(st.Tasks) >= maxTasks {
			return http.StatusRequestEntityTooLarge, false, errorBody("too many tasks")
		}
		st.Tasks = append(st.Tasks, task)
		return http.StatusOK, true, Tasks{st.Key, append([]string{}, st.Tasks...)}
	case "DELETE":
		i, err := strconv.Atoi(r.URL.Query().Get("i"))
		if err != nil || i < 0 || i >= len(st.Tasks) {
			return http.StatusNotFound, false, errorBody("no such task")
		}
		st.Tasks = append(st.Tasks[:i], st.Tasks[i+1:]...)
		return http.StatusOK, true, Tasks{st.Key, append([]string{}, st.Tasks...)}
	}
	return http.StatusMethodNotAllowed, false, errorBody("GET, POST or DELETE")
}

func errorBody(msg string) any {
	return struct {
		Error string `json:"error"`
	}{msg}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
