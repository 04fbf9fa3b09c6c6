package vmm

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestValidateTap(t *testing.T) {
	tapNet := func(tap *Tap) Network { return Network{Mode: NetworkTap, Tap: tap} }
	ok := []Network{
		tapNet(&Tap{Name: "tap0_cc"}),
		// os.Stdin stands in for an open tap: Validate only checks it is set.
		tapNet(&Tap{File: os.Stdin, MAC: "0a:58:0a:58:00:05", MTU: 1450}),
	}
	for _, n := range ok {
		c := validConfig(t)
		c.Network = n
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", n.Tap, err)
		}
	}
	bad := map[string]struct {
		n    Network
		want string
	}{
		"no tap":          {Network{Mode: NetworkTap}, `network mode "tap" needs Network.Tap`},
		"empty tap":       {tapNet(&Tap{}), "Network.Tap has neither File nor Name"},
		"long name":       {tapNet(&Tap{Name: strings.Repeat("t", 16)}), "is not an interface name: use at most 15 bytes"},
		"comma in name":   {tapNet(&Tap{Name: "tap,0"}), `Network.Tap.Name "tap,0" is not an interface name`},
		"bad mac":         {tapNet(&Tap{Name: "t", MAC: "zz"}), `Network.Tap.MAC "zz" is not a 6-byte MAC address`},
		"multicast mac":   {tapNet(&Tap{Name: "t", MAC: "01:00:5e:00:00:01"}), "is a multicast address"},
		"bad mtu":         {tapNet(&Tap{Name: "t", MTU: 10}), "Network.Tap.MTU is 10, want 68 to 65535"},
		"tap in user":     {Network{Mode: NetworkUser, Tap: &Tap{Name: "t"}}, `Network.Tap "t" is set but network mode is "user"`},
		"forwards in tap": {Network{Mode: NetworkTap, Tap: &Tap{Name: "t"}, Restrict: true}, "are user-network settings"},
	}
	for name, tt := range bad {
		t.Run(name, func(t *testing.T) {
			c := validConfig(t)
			c.Network = tt.n
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("Validate() = %v, want an invalid-argument error containing %q", err, tt.want)
			}
		})
	}
}
