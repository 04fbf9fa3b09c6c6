package cloudhypervisor

import (
	"bytes"
	"encoding/json"
)

func jsonOf(v any) ([]byte, error) { return json.Marshal(v) }

func decodeJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}
