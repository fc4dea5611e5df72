/**
 * The shared cases (clients/testdata/cases.json) against the live local mesh that scripts/dev/clients.sh
 * starts; PRIVMESH_MESH_DIR names its state directory.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { createRegistry, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { file_privmesh_attestation_v1_attestation } from "../src/gen/privmesh/attestation/v1/attestation_pb.js";
import { file_privmesh_dpgateway_v1_dpgateway } from "../src/gen/privmesh/dpgateway/v1/dpgateway_pb.js";
import {
  FHEInference, file_privmesh_fhe_v1_fhe, type KeyPartKind, KeyPartKindSchema, RegisterKeysHeaderSchema,
} from "../src/gen/privmesh/fhe/v1/fhe_pb.js";
import { file_privmesh_fl_v1_fl } from "../src/gen/privmesh/fl/v1/fl_pb.js";
import { file_privmesh_keybroker_v1_keybroker } from "../src/gen/privmesh/keybroker/v1/keybroker_pb.js";
import { file_privmesh_tokenvault_v1_tokenvault } from "../src/gen/privmesh/tokenvault/v1/tokenvault_pb.js";
import { createMeshTransport, type MeshTransport, readError, registerKeys } from "../src/index.js";

type Json = JsonValue;
type JsonObject = { [key: string]: Json };
interface Step {
  service?: string; call?: string; exec?: string[]; request?: Json; save?: string;
  register_keys?: { header: Json; parts: { kind: string; zeros: number }[] };
  expect?: { equal?: JsonObject; present?: string[]; contains?: Record<string, JsonObject>; error?: ExpectedError };
}
interface ExpectedError { code: string; reason?: string; domain?: string; field?: string }

const testdata = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "testdata");
const cases = JSON.parse(readFileSync(join(testdata, "cases.json"), "utf8"));
const meshDir = process.env.PRIVMESH_MESH_DIR;
const registry = createRegistry(file_privmesh_attestation_v1_attestation, file_privmesh_keybroker_v1_keybroker,
  file_privmesh_tokenvault_v1_tokenvault, file_privmesh_dpgateway_v1_dpgateway, file_privmesh_fhe_v1_fhe,
  file_privmesh_fl_v1_fl);
const variables: JsonObject = { run: `ts${randomBytes(4).toString("hex")}`, testdata };
const transports = new Map<string, MeshTransport>();

function endpoint(service: string): { target: string; spiffe_id: string } {
  const mesh = JSON.parse(readFileSync(join(meshDir!, "mesh.json"), "utf8"));
  const found = mesh.endpoints.find((e: { service: string }) => e.service === service);
  assert.ok(found, `mesh.json has no ${service}`);
  return found;
}

function transport(service: string, identity = "admin", pki = "pki"): MeshTransport {
  const key = `${service}/${pki}/${identity}`;
  if (!transports.has(key)) {
    transports.set(key, createMeshTransport(endpoint(service).target, {
      caFile: join(meshDir!, "pki", "ca.crt"), certFile: join(meshDir!, pki, `${identity}.crt`),
      keyFile: join(meshDir!, pki, `${identity}.key`) }, { timeoutMs: 120_000, peer: endpoint(service).spiffe_id }));
  }
  return transports.get(key)!;
}

/** Calls a unary method by name through the generated client, proto JSON in and out. */
async function invoke(t: MeshTransport, call: string, request: Json = {}): Promise<Json> {
  const [serviceName, methodName] = call.split("/");
  const service = registry.getService(serviceName);
  const method = service?.methods.find((m) => m.name === methodName);
  assert.ok(service && method && method.methodKind === "unary", `no unary method ${call}`);
  const client = createClient(service, t) as unknown as Record<string, (req: unknown) => Promise<never>>;
  const reply = await client[method.localName](fromJson(method.input, request, { registry }));
  return toJson(method.output, reply, { registry });
}

function lookup(value: Json | undefined, path: string): Json | undefined {
  for (const part of path.split(".")) {
    if (Array.isArray(value)) {
      value = value[Number(part)];
    } else if (value !== null && typeof value === "object") {
      value = (value as JsonObject)[part];
    } else {
      return undefined;
    }
  }
  return value;
}

/** Replaces ${path} in every string; a whole-string placeholder by the value itself. */
function substitute(value: Json): Json {
  if (typeof value === "string") {
    const whole = /^\$\{([^}]+)\}$/.exec(value);
    if (whole) {
      return defined(whole[1]);
    }
    return value.replace(/\$\{([^}]+)\}/g, (_, path: string) => String(defined(path)));
  }
  if (Array.isArray(value)) {
    return value.map(substitute);
  }
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v)]));
  }
  return value;
}

function defined(path: string): Json {
  const value = lookup(variables, path);
  assert.ok(value !== undefined, `no value at \${${path}}`);
  return value;
}

function same(got: Json | undefined, want: Json): boolean {
  if (typeof got === "number" && typeof want === "number") {
    return Math.abs(got - want) <= 1e-9 * Math.max(1, Math.abs(want));
  }
  try {
    assert.deepStrictEqual(got, want);
    return true;
  } catch {
    return false;
  }
}

function checkError(err: unknown, want: ExpectedError): void {
  assert.ok(err !== undefined, `want ${want.code} ${want.reason ?? ""}, the call succeeded`);
  const e = readError(err);
  assert.equal(e.code, Code[codeName(want.code)], `want ${want.code}, got ${e.message}`);
  if (want.reason) {
    assert.ok(e.reasonIs(want.reason), `want reason ${want.reason} as the contract's enum, got ${e.message}`);
  }
  if (want.domain) {
    assert.equal(e.domain, want.domain);
  }
  if (want.field) {
    assert.ok(e.violation(want.field), `want a violation of ${want.field}, got ${JSON.stringify(e.violations)}`);
  }
}

/** "INVALID_ARGUMENT" -> "InvalidArgument", the name of connect's Code. */
function codeName(name: string): keyof typeof Code {
  return name.toLowerCase().replace(/(^|_)(\w)/g, (_, __, c: string) => c.toUpperCase()) as keyof typeof Code;
}

async function failure(call: Promise<unknown>): Promise<unknown> {
  try {
    await call;
  } catch (err) {
    return err;
  }
  return undefined;
}

async function runStep(flowService: string, step: Step): Promise<void> {
  if (step.exec) {
    const fixture = (process.env.PRIVMESH_FIXTURE ?? "").split(/\s+/).filter(Boolean);
    assert.ok(fixture.length, "PRIVMESH_FIXTURE is unset (scripts/dev/clients.sh sets it)");
    const args = [...fixture.slice(1), ...step.exec.map((a) => String(substitute(a)))];
    variables[step.save!] = JSON.parse(execFileSync(fixture[0], args, { encoding: "utf8" }));
    return;
  }
  const t = transport(step.service ?? flowService);
  const request = substitute(step.request ?? {});
  if (step.register_keys) {
    const header = fromJson(RegisterKeysHeaderSchema, substitute(step.register_keys.header), { registry });
    const parts = step.register_keys.parts.map((p) => ({
      kind: KeyPartKindSchema.values.find((v) => v.name === p.kind)!.number as KeyPartKind,
      data: new Uint8Array(p.zeros) }));
    checkError(await failure(registerKeys(createClient(FHEInference, t), header, parts)), step.expect!.error!);
    return;
  }
  if (step.expect?.error) {
    checkError(await failure(invoke(t, step.call!, request)), step.expect.error);
    return;
  }
  const reply = await invoke(t, step.call!, request);
  if (step.save) {
    variables[step.save] = reply;
  }
  for (const [path, want] of Object.entries(step.expect?.equal ?? {})) {
    const expected = substitute(want);
    assert.ok(same(lookup(reply, path), expected), `${step.call}: ${path} = ${JSON.stringify(lookup(reply, path))}, want ${JSON.stringify(expected)}`);
  }
  for (const path of step.expect?.present ?? []) {
    const got = lookup(reply, path);
    assert.ok(got !== undefined && got !== "" && got !== null, `${step.call}: ${path} is empty`);
  }
  for (const [path, fields] of Object.entries(step.expect?.contains ?? {})) {
    const want = substitute(fields) as JsonObject;
    const items = (lookup(reply, path) ?? []) as Json[];
    assert.ok(items.some((item) => Object.entries(want).every(([k, v]) => same(lookup(item, k), v))),
              `${step.call}: no element of ${path} has ${JSON.stringify(want)}`);
  }
}

describe("the shared cases against a live mesh", { skip: meshDir ? false : "PRIVMESH_MESH_DIR is unset: scripts/dev/clients.sh starts a mesh and runs these tests" }, () => {
  after(() => transports.forEach((t) => t.close()));

  for (const flow of cases.flows) {
    it(`flow: ${flow.name}`, async () => {
      for (const step of flow.steps) {
        await runStep(flow.service, step);
      }
    });
  }
  for (const bad of cases.bad_inputs) {
    it(`bad input: ${bad.service}`, async () => {
      const err = await failure(invoke(transport(bad.service), bad.call, substitute(bad.request)));
      checkError(err, { code: "INVALID_ARGUMENT", domain: bad.domain, field: bad.field });
    });
  }
  for (const denied of cases.denied.calls) {
    it(`denied: ${denied.service}`, async () => {
      const err = await failure(invoke(transport(denied.service, cases.denied.identity), denied.call, denied.request ?? {}));
      checkError(err, { code: cases.denied.code, reason: cases.denied.reason, domain: denied.domain });
    });
  }
  it("a channel uses its certificate files once rotated", async () => {
    const r = cases.rotation;
    const dir = mkdtempSync(join(tmpdir(), "privmesh-rotation-"));
    const me = { caFile: join(meshDir!, "pki", "ca.crt"), certFile: join(dir, "me.crt"), keyFile: join(dir, "me.key") };
    const install = (pki: string, identity: string) => {
      for (const ext of ["crt", "key"]) {  // as a rotation writes them: whole files, atomically
        copyFileSync(join(meshDir!, pki, `${identity}.${ext}`), join(dir, `me.${ext}.tmp`));
        renameSync(join(dir, `me.${ext}.tmp`), join(dir, `me.${ext}`));
      }
    };
    install(r.before.pki, r.before.identity);
    const t = createMeshTransport(endpoint(r.service).target, me, { peer: endpoint(r.service).spiffe_id });
    try {
      assert.ok(readError(await failure(invoke(t, r.call))).handshakeRefused, "the first identity was not refused");
      install(r.after.pki, r.after.identity);
      await invoke(t, r.call);
    } finally {
      t.close();
      rmSync(dir, { recursive: true });
    }
  });
  it("a channel pinned to another service's identity is refused", async () => {
    const w = cases.wrong_peer;
    const me = { caFile: join(meshDir!, "pki", "ca.crt"), certFile: join(meshDir!, "pki", "admin.crt"),
                 keyFile: join(meshDir!, "pki", "admin.key") };
    const t = createMeshTransport(endpoint(w.service).target, me, { peer: endpoint(w.peer_of).spiffe_id });
    try {
      const e = readError(await failure(invoke(t, w.call)));
      assert.ok(e.handshakeRefused, `${w.service} answered as ${w.peer_of}: ${e.message}`);
    } finally {
      t.close();
    }
  });
  it("a refused TLS handshake says so", async () => {
    const h = cases.handshake_refused;
    for (const identity of h.identities) {
      const e = readError(await failure(invoke(transport(h.service, identity, "foreign-pki"), h.call)));
      assert.equal(e.code, Code[codeName(h.code)], e.message);
      assert.ok(e.handshakeRefused && e.message.includes("TLS handshake refused"), e.message);
    }
  });
});
