/** The chunked streams: fhe-inference RegisterKeys and Infer, fl-coordinator GetModel (1 MiB per chunk). */
import { createHash } from "node:crypto";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { CallOptions, Client } from "@connectrpc/connect";
import {
  type FHEInference, type InferRequest, InferRequestSchema, KeyPartInfoSchema, type KeyPartKind, RegisterKeysHeaderSchema,
  type RegisterKeysRequest, RegisterKeysRequestSchema, type Session,
} from "./gen/privmesh/fhe/v1/fhe_pb.js";
import type { FLCoordinator, GetModelRequestSchema, ModelHeader } from "./gen/privmesh/fl/v1/fl_pb.js";

export const CHUNK_BYTES = 1024 * 1024;

/** One part of a client's FHE key set, serialized. */
export interface KeyPart {
  kind: KeyPartKind;
  data: Uint8Array;
}

function* slices(data: Uint8Array): Generator<[number, Uint8Array]> {
  for (let offset = 0; offset < data.length; offset += CHUNK_BYTES) {
    yield [offset, data.subarray(offset, offset + CHUNK_BYTES)];
  }
}

/** Opens an fhe-inference session: the header (key parts declared here: kind, size, SHA-256), then the chunks. */
export async function registerKeys(client: Client<typeof FHEInference>,
                                   header: MessageInitShape<typeof RegisterKeysHeaderSchema>,
                                   parts: KeyPart[], options?: CallOptions): Promise<Session | undefined> {
  async function* requests(): AsyncGenerator<RegisterKeysRequest> {
    const value = create(RegisterKeysHeaderSchema, header);
    value.keyParts = parts.map((p) => create(KeyPartInfoSchema, { kind: p.kind, sizeBytes: BigInt(p.data.length),
                                                                  sha256: createHash("sha256").update(p.data).digest() }));
    yield create(RegisterKeysRequestSchema, { payload: { case: "header", value } });
    for (const part of parts) {
      for (const [offset, data] of slices(part.data)) {
        yield create(RegisterKeysRequestSchema,
                     { payload: { case: "chunk", value: { kind: part.kind, offset: BigInt(offset), data } } });
      }
    }
  }
  return (await client.registerKeys(requests(), options)).session;
}

/** One Infer input or output: its id, the samples it packs, and its serialized ciphertexts. */
export interface Batch {
  inputId: number;
  sampleCount: number;
  ciphertexts: Uint8Array[];
}

/** Encrypted inference in `session`: inputs are streamed while the outputs are read back and reassembled. */
export async function infer(client: Client<typeof FHEInference>, session: string, inputs: Batch[],
                            options?: CallOptions): Promise<Batch[]> {
  async function* requests(): AsyncGenerator<InferRequest> {
    yield create(InferRequestSchema, { payload: { case: "start", value: { session } } });
    for (const input of inputs) {
      const ciphertexts = input.ciphertexts.map((c) => ({ sizeBytes: BigInt(c.length) }));
      yield create(InferRequestSchema, { payload: { case: "input",
        value: { inputId: input.inputId, sampleCount: input.sampleCount, ciphertexts } } });
      for (const [index, ciphertext] of input.ciphertexts.entries()) {
        for (const [offset, data] of slices(ciphertext)) {
          yield create(InferRequestSchema, { payload: { case: "chunk",
            value: { inputId: input.inputId, ciphertextIndex: index, offset: BigInt(offset), data } } });
        }
      }
    }
  }
  const outputs: { batch: Batch; parts: Uint8Array[][]; sizes: bigint[] }[] = [];
  for await (const reply of client.infer(requests(), options)) {
    if (reply.payload.case === "output") {
      const out = reply.payload.value;
      outputs.push({ batch: { inputId: out.inputId, sampleCount: out.sampleCount, ciphertexts: [] },
                     parts: out.ciphertexts.map(() => []), sizes: out.ciphertexts.map((c) => c.sizeBytes) });
    } else if (reply.payload.case === "chunk") {
      const chunk = reply.payload.value;
      const current = outputs.at(-1);
      const received = current?.parts[chunk.ciphertextIndex]?.reduce((n, p) => n + p.length, 0);
      if (!current || current.batch.inputId !== chunk.inputId || received === undefined
          || BigInt(received) !== chunk.offset) {
        throw new Error("Infer: a chunk does not follow the announced output");
      }
      current.parts[chunk.ciphertextIndex].push(chunk.data);
    }
  }
  return outputs.map(({ batch, parts, sizes }) => {
    batch.ciphertexts = parts.map((p) => Buffer.concat(p));
    if (batch.ciphertexts.some((c, i) => BigInt(c.length) !== sizes[i])) {
      throw new Error(`Infer: output ${batch.inputId} ended before its announced size`);
    }
    return batch;
  });
}

/** Reads an fl-coordinator GetModel stream: the header, then the model bytes checked against its size and SHA-256. */
export async function downloadModel(client: Client<typeof FLCoordinator>,
                                    request: MessageInitShape<typeof GetModelRequestSchema>,
                                    options?: CallOptions): Promise<{ header: ModelHeader; data: Uint8Array }> {
  let header: ModelHeader | undefined;
  const parts: Uint8Array[] = [];
  let received = 0n;
  for await (const reply of client.getModel(request, options)) {
    if (reply.payload.case === "header") {
      header = reply.payload.value;
    } else if (reply.payload.case === "chunk") {
      const chunk = reply.payload.value;
      if (!header || chunk.offset !== received || received + BigInt(chunk.data.length) > header.sizeBytes) {
        throw new Error("GetModel: chunk out of order or beyond the announced size");
      }
      parts.push(chunk.data);
      received += BigInt(chunk.data.length);
    }
  }
  if (!header || received !== header.sizeBytes) {
    throw new Error("GetModel: the stream ended before the whole model");
  }
  const data = Buffer.concat(parts);
  if (header.sha256 && createHash("sha256").update(data).digest("hex") !== header.sha256) {
    throw new Error("GetModel: the model's SHA-256 differs from the header's");
  }
  return { header, data };
}
