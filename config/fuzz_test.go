package config

import (
	"os"
	"strings"
	"testing"
)

// FuzzParse: no file, however odd its YAML (anchors, aliases, merge keys,
// tags, deep nesting), panics the parser; a file is either refused with an
// error naming the file or gives a configuration that passed validation.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("../clb.yaml.example")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		minimal,
		minimal + "health: &h {interval: 1s}\nloadfactor: *h\n",
		minimal + "health:\n  <<: {rise: 2}\n",
		minimal + "keys:\n  sip:\n    - !!map {header: From, uri_user: true}\n",
		minimal + "instances: !!str x\n",
		"listen: [[[[[]]]]]\n",
		"&a [*a]\n",
		"? [a, b]\n: c\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		c, err := Parse("fuzz.yaml", []byte(text))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if c == nil || len(c.Instances) == 0 {
			t.Fatalf("accepted without instances: %+v", c)
		}
	})
}
