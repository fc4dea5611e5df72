/** The shared "retries" case: the transport retries exactly the methods the contracts mark idempotent. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { it } from "node:test";
import { fileURLToPath } from "node:url";
import { createRegistry } from "@bufbuild/protobuf";
import { Code, ConnectError, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import { file_privmesh_attestation_v1_attestation } from "../src/gen/privmesh/attestation/v1/attestation_pb.js";
import { file_privmesh_dpgateway_v1_dpgateway } from "../src/gen/privmesh/dpgateway/v1/dpgateway_pb.js";
import { file_privmesh_fl_v1_fl } from "../src/gen/privmesh/fl/v1/fl_pb.js";
import { file_privmesh_keybroker_v1_keybroker } from "../src/gen/privmesh/keybroker/v1/keybroker_pb.js";
import { file_privmesh_tokenvault_v1_tokenvault } from "../src/gen/privmesh/tokenvault/v1/tokenvault_pb.js";
import { retryIdempotent } from "../src/index.js";

const testdata = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "testdata");
const { retries } = JSON.parse(readFileSync(join(testdata, "cases.json"), "utf8"));
const registry = createRegistry(file_privmesh_attestation_v1_attestation, file_privmesh_keybroker_v1_keybroker,
  file_privmesh_tokenvault_v1_tokenvault, file_privmesh_dpgateway_v1_dpgateway, file_privmesh_fl_v1_fl);

/** How many times the interceptor tries `call` when every attempt fails with UNAVAILABLE. */
async function attempts(call: string): Promise<number> {
  const [service, name] = call.split("/");
  const method = registry.getService(service)?.methods.find((m) => m.name === name);
  assert.ok(method, `no method ${call}`);
  let count = 0;
  const next = async (): Promise<UnaryResponse> => {
    count++;
    throw new ConnectError("unavailable", Code.Unavailable);
  };
  const request = { stream: false, method, signal: new AbortController().signal } as unknown as UnaryRequest;
  await assert.rejects(retryIdempotent(next)(request), (e: unknown) => ConnectError.from(e).code === Code.Unavailable);
  return count;
}

it("retries the idempotent methods on UNAVAILABLE, and only them", async () => {
  for (const call of retries.retried) {
    assert.equal(await attempts(call), retries.max_attempts, call);
  }
  for (const call of retries.not_retried) {
    assert.equal(await attempts(call), 1, call);
  }
});
