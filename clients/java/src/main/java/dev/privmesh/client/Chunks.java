package dev.privmesh.client;

import com.google.protobuf.ByteString;
import dev.privmesh.fhe.v1.CiphertextChunk;
import dev.privmesh.fhe.v1.CiphertextInfo;
import dev.privmesh.fhe.v1.FHEInferenceGrpc;
import dev.privmesh.fhe.v1.InferInput;
import dev.privmesh.fhe.v1.InferRequest;
import dev.privmesh.fhe.v1.InferResponse;
import dev.privmesh.fhe.v1.InferStart;
import dev.privmesh.fhe.v1.KeyChunk;
import dev.privmesh.fhe.v1.KeyPartInfo;
import dev.privmesh.fhe.v1.KeyPartKind;
import dev.privmesh.fhe.v1.RegisterKeysHeader;
import dev.privmesh.fhe.v1.RegisterKeysRequest;
import dev.privmesh.fhe.v1.RegisterKeysResponse;
import dev.privmesh.fhe.v1.Session;
import dev.privmesh.fl.v1.FLCoordinatorGrpc;
import dev.privmesh.fl.v1.GetModelRequest;
import dev.privmesh.fl.v1.GetModelResponse;
import dev.privmesh.fl.v1.ModelHeader;
import io.grpc.stub.StreamObserver;
import java.io.ByteArrayOutputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;

/** The chunked streams: fhe-inference RegisterKeys and Infer, fl-coordinator GetModel (1 MiB per chunk). */
public final class Chunks {
  public static final int CHUNK_BYTES = 1024 * 1024;

  private Chunks() {}

  /** One part of a client's FHE key set, serialized. */
  public record KeyPart(KeyPartKind kind, byte[] data) {}

  /** One Infer input or output: its id, the samples it packs, and its serialized ciphertexts. */
  public record Batch(int inputId, int sampleCount, List<byte[]> ciphertexts) {}

  /** A model read from fl-coordinator: its header and bytes. */
  public record Model(ModelHeader header, byte[] data) {}

  private static byte[] sha256(byte[] data) {
    try {
      return MessageDigest.getInstance("SHA-256").digest(data);
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("every JDK has SHA-256", e);
    }
  }

  /** A unary reply of a streaming call, as a future. */
  private static final class Reply<T> extends CompletableFuture<T> implements StreamObserver<T> {
    @Override
    public void onNext(T value) {
      complete(value);
    }

    @Override
    public void onError(Throwable t) {
      completeExceptionally(t);
    }

    @Override
    public void onCompleted() {
      complete(null);
    }
  }

  private static <T> T await(CompletableFuture<T> future) throws InterruptedException {
    try {
      return future.get();
    } catch (ExecutionException e) {
      throw MeshError.from(e.getCause());
    }
  }

  /** Opens an fhe-inference session: the header (key parts declared here: kind, size, SHA-256), then the chunks. */
  public static Session registerKeys(FHEInferenceGrpc.FHEInferenceStub stub, RegisterKeysHeader header,
                                     List<KeyPart> parts) throws InterruptedException {
    RegisterKeysHeader.Builder declared = header.toBuilder().clearKeyParts();
    for (KeyPart part : parts) {
      declared.addKeyParts(KeyPartInfo.newBuilder().setKind(part.kind()).setSizeBytes(part.data().length)
                               .setSha256(ByteString.copyFrom(sha256(part.data()))));
    }
    Reply<RegisterKeysResponse> reply = new Reply<>();
    StreamObserver<RegisterKeysRequest> requests = stub.registerKeys(reply);
    requests.onNext(RegisterKeysRequest.newBuilder().setHeader(declared).build());
    for (KeyPart part : parts) {
      for (int offset = 0; offset < part.data().length && !reply.isDone(); offset += CHUNK_BYTES) {
        int size = Math.min(CHUNK_BYTES, part.data().length - offset);
        requests.onNext(RegisterKeysRequest.newBuilder().setChunk(KeyChunk.newBuilder().setKind(part.kind())
            .setOffset(offset).setData(ByteString.copyFrom(part.data(), offset, size))).build());
      }
    }
    requests.onCompleted();
    return await(reply).getSession();
  }

  /** Encrypted inference in {@code session}: the inputs are streamed, the outputs read back and reassembled. */
  public static List<Batch> infer(FHEInferenceGrpc.FHEInferenceStub stub, String session, List<Batch> inputs)
      throws InterruptedException {
    List<Batch> outputs = new ArrayList<>();
    List<ByteArrayOutputStream> current = new ArrayList<>();
    CompletableFuture<Void> done = new CompletableFuture<>();
    StreamObserver<InferRequest> requests = stub.infer(new StreamObserver<>() {
      @Override
      public void onNext(InferResponse reply) {
        if (reply.hasOutput()) {
          outputs.add(new Batch(reply.getOutput().getInputId(), reply.getOutput().getSampleCount(), new ArrayList<>()));
          current.clear();
          reply.getOutput().getCiphertextsList().forEach(c -> current.add(new ByteArrayOutputStream()));
        } else if (reply.hasChunk()) {
          CiphertextChunk chunk = reply.getChunk();
          if (outputs.isEmpty() || chunk.getInputId() != outputs.get(outputs.size() - 1).inputId()
              || chunk.getCiphertextIndex() >= current.size()
              || current.get(chunk.getCiphertextIndex()).size() != chunk.getOffset()) {
            done.completeExceptionally(new IllegalStateException("Infer: a chunk does not follow its output"));
            return;
          }
          current.get(chunk.getCiphertextIndex()).writeBytes(chunk.getData().toByteArray());
          List<byte[]> ciphertexts = outputs.get(outputs.size() - 1).ciphertexts();
          ciphertexts.clear();
          current.forEach(b -> ciphertexts.add(b.toByteArray()));
        }
      }

      @Override
      public void onError(Throwable t) {
        done.completeExceptionally(t);
      }

      @Override
      public void onCompleted() {
        done.complete(null);
      }
    });
    requests.onNext(InferRequest.newBuilder().setStart(InferStart.newBuilder().setSession(session)).build());
    for (Batch input : inputs) {
      InferInput.Builder announce = InferInput.newBuilder().setInputId(input.inputId()).setSampleCount(input.sampleCount());
      input.ciphertexts().forEach(c -> announce.addCiphertexts(CiphertextInfo.newBuilder().setSizeBytes(c.length)));
      requests.onNext(InferRequest.newBuilder().setInput(announce).build());
      for (int index = 0; index < input.ciphertexts().size(); index++) {
        byte[] c = input.ciphertexts().get(index);
        for (int offset = 0; offset < c.length && !done.isDone(); offset += CHUNK_BYTES) {
          requests.onNext(InferRequest.newBuilder().setChunk(CiphertextChunk.newBuilder().setInputId(input.inputId())
              .setCiphertextIndex(index).setOffset(offset)
              .setData(ByteString.copyFrom(c, offset, Math.min(CHUNK_BYTES, c.length - offset)))).build());
        }
      }
    }
    requests.onCompleted();
    await(done);
    return outputs;
  }

  /** Reads an fl-coordinator GetModel stream: the header, then the bytes, checked against its size and SHA-256. */
  public static Model downloadModel(FLCoordinatorGrpc.FLCoordinatorBlockingStub stub, GetModelRequest request) {
    ModelHeader header = null;
    ByteArrayOutputStream data = new ByteArrayOutputStream();
    try {
      for (Iterator<GetModelResponse> replies = stub.getModel(request); replies.hasNext(); ) {
        GetModelResponse reply = replies.next();
        if (reply.hasHeader()) {
          header = reply.getHeader();
        } else if (header == null || reply.getChunk().getOffset() != data.size()
                   || data.size() + reply.getChunk().getData().size() > header.getSizeBytes()) {
          throw new IllegalStateException("GetModel: chunk out of order or beyond the announced size");
        } else {
          data.writeBytes(reply.getChunk().getData().toByteArray());
        }
      }
    } catch (io.grpc.StatusRuntimeException e) {
      throw MeshError.from(e);
    }
    if (header == null || data.size() != header.getSizeBytes()) {
      throw new IllegalStateException("GetModel: the stream ended before the whole model");
    }
    byte[] bytes = data.toByteArray();
    if (!header.getSha256().isEmpty() && !HexFormat.of().formatHex(sha256(bytes)).equals(header.getSha256())) {
      throw new IllegalStateException("GetModel: the model's SHA-256 differs from the header's");
    }
    return new Model(header, bytes);
  }
}
