package privmesh

// Every contract's generated package registers its descriptors, so ServiceConfig and the error decoding
// see all of them whichever stubs the caller imports.
import (
	_ "github.com/privmesh/privmesh/clients/go/gen/privmesh/attestation/v1"
	_ "github.com/privmesh/privmesh/clients/go/gen/privmesh/common/v1"
	_ "github.com/privmesh/privmesh/clients/go/gen/privmesh/dpgateway/v1"
	_ "github.com/privmesh/privmesh/clients/go/gen/privmesh/fhe/v1"
	_ "github.com/privmesh/privmesh/clients/go/gen/privmesh/fl/v1"
	_ "github.com/privmesh/privmesh/clients/go/gen/privmesh/keybroker/v1"
	_ "github.com/privmesh/privmesh/clients/go/gen/privmesh/tokenvault/v1"
)
