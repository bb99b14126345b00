package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Error is one problem in a configuration file.
type Error struct {
	File string
	Line int
	// Key is the key path, e.g. "instances[1].weight"; empty for the file.
	Key string
	Msg string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
}

// decoder walks the YAML tree against the Config struct, so that every key is
// checked and every value's line is known to validation.
type decoder struct {
	file  string
	lines map[string]int // key path → line where it is written
	errs  []error
	// validating is set once decoding is done; from then on an error about
	// a key that already has one (or whose parent or child has) is most
	// likely a consequence, not news, and is left out.
	validating bool
}

func (d *decoder) errorf(line int, key, format string, args ...any) {
	if d.validating && d.reported(key) {
		return
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// reported reports whether an error names key, a parent or a child of it.
func (d *decoder) reported(key string) bool {
	for _, err := range d.errs {
		if related(err.(*Error).Key, key) {
			return true
		}
	}
	return false
}

// related reports whether key k is key, a parent or a child of it ("" is
// the parent of all).
func related(k, key string) bool {
	return k == "" || k == key || strings.HasPrefix(key, k+".") || strings.HasPrefix(key, k+"[") ||
		strings.HasPrefix(k, key+".") || strings.HasPrefix(k, key+"[")
}

// err joins the errors in line order.
func (d *decoder) err() error {
	slices.SortStableFunc(d.errs, func(a, b error) int { return a.(*Error).Line - b.(*Error).Line })
	return errors.Join(d.errs...)
}

// line is where key is written or, if it is absent, its nearest ancestor.
func (d *decoder) line(key string) int {
	for key != "" {
		if l, ok := d.lines[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 1
}

var syntaxLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (d *decoder) document(data []byte, cfg *Config) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		line, msg := 1, strings.TrimPrefix(err.Error(), "yaml: ")
		if m := syntaxLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
			// yaml.v3 counts lines from 0 in its parser's errors, from 1 in
			// its scanner's; the parser's all say "did not find expected".
			if strings.HasPrefix(msg, "did not find expected") {
				line++
			}
		}
		d.errorf(line, "", "YAML syntax: %s", msg)
		return
	}
	if len(root.Content) == 0 {
		return // empty file: validation says what is missing
	}
	d.value(root.Content[0], reflect.ValueOf(cfg).Elem(), "")
}

// defaulter is a list element with defaults of its own.
type defaulter interface{ setDefaults() }

func (i *Instance) setDefaults() { i.Weight = DefaultWeight }

func (c *Cluster) setDefaults() { c.Weight = DefaultWeight }

var durationType = reflect.TypeFor[time.Duration]()

func (d *decoder) value(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // keep the default
	}
	if u, ok := v.Addr().Interface().(yaml.Unmarshaler); ok {
		if err := u.UnmarshalYAML(n); err != nil {
			d.errorf(n.Line, key, "%v", err)
		}
		return
	}
	switch {
	case v.Kind() == reflect.Pointer: // an optional value: set when written
		v.Set(reflect.New(v.Type().Elem()))
		d.value(n, v.Elem(), key)
	case v.Kind() == reflect.Struct:
		d.mapping(n, v, key)
	case v.Kind() == reflect.Slice:
		d.sequence(n, v, key)
	default:
		d.scalar(n, v, key)
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n.Line, key, "want a mapping of keys to values")
		return
	}
	fields := map[string]int{}
	for i := range v.NumField() {
		if tag := v.Type().Field(i).Tag.Get("yaml"); tag != "" && tag != "-" {
			fields[tag] = i
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		path := k.Value
		if key != "" {
			path = key + "." + k.Value
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k.Line, key, "a key must be a plain name")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(k.Line, path, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		f, ok := fields[k.Value]
		if !ok {
			d.errorf(k.Line, path, "unknown key (known: %s)", knownKeys(fields))
			continue
		}
		d.lines[path] = k.Line
		d.value(val, v.Field(f), path)
	}
}

func knownKeys(fields map[string]int) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, key string) {
	switch n.Kind {
	case yaml.SequenceNode:
	case yaml.ScalarNode: // a single value where a list is expected: a list of one
		n = &yaml.Node{Kind: yaml.SequenceNode, Line: n.Line, Content: []*yaml.Node{n}}
	default:
		d.errorf(n.Line, key, "want a list")
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		path := fmt.Sprintf("%s[%d]", key, i)
		d.lines[path] = item.Line
		if def, ok := s.Index(i).Addr().Interface().(defaulter); ok {
			def.setDefaults()
		}
		d.value(item, s.Index(i), path)
	}
	v.Set(s)
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, key string) {
	want := map[reflect.Kind]string{
		reflect.String:  "a string",
		reflect.Bool:    "true or false",
		reflect.Int:     "a whole number",
		reflect.Float64: "a number",
	}[v.Kind()]
	if v.Type() == durationType {
		want = "a duration such as 2s or 500ms"
	}
	if n.Kind != yaml.ScalarNode {
		d.errorf(n.Line, key, "want %s", want)
		return
	}
	if v.Kind() == reflect.String {
		v.SetString(n.Value) // any scalar reads as its text
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		d.errorf(n.Line, key, "want %s, got %q", want, n.Value)
	}
}
