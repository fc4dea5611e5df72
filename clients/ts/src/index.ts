/** The TypeScript SDK of the privmesh services; the generated clients are under "@privmesh/client/gen/...". */
export { createMeshTransport, retryIdempotent, spiffeDnsName, type Identity, type MeshTransport,
         type MeshTransportOptions } from "./transport.js";
export { MeshError, readError } from "./errors.js";
export { CHUNK_BYTES, downloadModel, infer, registerKeys, type Batch, type KeyPart } from "./chunks.js";
