package dev.privmesh.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import com.google.protobuf.Message;
import com.google.protobuf.util.JsonFormat;
import dev.privmesh.attestation.v1.AttestationVerifierGrpc;
import dev.privmesh.dpgateway.v1.DPGatewayGrpc;
import dev.privmesh.fhe.v1.FHEInferenceGrpc;
import dev.privmesh.fhe.v1.KeyPartKind;
import dev.privmesh.fhe.v1.RegisterKeysHeader;
import dev.privmesh.fl.v1.FLCoordinatorGrpc;
import dev.privmesh.keybroker.v1.KeyBrokerGrpc;
import dev.privmesh.tokenvault.v1.TokenVaultGrpc;
import io.grpc.CallOptions;
import io.grpc.MethodDescriptor;
import io.grpc.ServiceDescriptor;
import io.grpc.Status;
import io.grpc.stub.ClientCalls;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.io.TempDir;

/**
 * The shared cases (clients/testdata/cases.json) against the live local mesh that scripts/dev/clients.sh
 * starts; PRIVMESH_MESH_DIR names its state directory.
 */
class MeshCasesTest {
  private static final Path TESTDATA = Path.of("..", "testdata").toAbsolutePath().normalize();
  private static final List<ServiceDescriptor> STUBS = List.of(AttestationVerifierGrpc.getServiceDescriptor(),
      KeyBrokerGrpc.getServiceDescriptor(), TokenVaultGrpc.getServiceDescriptor(), DPGatewayGrpc.getServiceDescriptor(),
      FHEInferenceGrpc.getServiceDescriptor(), FLCoordinatorGrpc.getServiceDescriptor());
  private static final Pattern PLACEHOLDER = Pattern.compile("\\$\\{([^}]+)\\}");

  private static JsonObject cases;
  private static Path meshDir;
  private static final Map<String, String> targets = new HashMap<>();
  private static final Map<String, String> peers = new HashMap<>();
  private static final Map<String, MeshChannel> channels = new HashMap<>();
  private static final JsonObject variables = new JsonObject();

  @BeforeAll
  static void loadCases() throws IOException {
    String dir = System.getenv("PRIVMESH_MESH_DIR");
    assumeTrue(dir != null, "PRIVMESH_MESH_DIR is unset: scripts/dev/clients.sh starts a mesh and runs these tests");
    meshDir = Path.of(dir);
    cases = JsonParser.parseString(Files.readString(TESTDATA.resolve("cases.json"))).getAsJsonObject();
    JsonObject mesh = JsonParser.parseString(Files.readString(meshDir.resolve("mesh.json"))).getAsJsonObject();
    for (JsonElement e : mesh.getAsJsonArray("endpoints")) {
      JsonObject endpoint = e.getAsJsonObject();
      targets.put(endpoint.get("service").getAsString(), endpoint.get("target").getAsString());
      peers.put(endpoint.get("service").getAsString(), endpoint.get("spiffe_id").getAsString());
    }
    byte[] run = new byte[4];
    new SecureRandom().nextBytes(run);
    variables.addProperty("run", "java" + HexFormat.of().formatHex(run));
    variables.addProperty("testdata", TESTDATA.toString());
  }

  @AfterAll
  static void closeChannels() throws InterruptedException {
    for (MeshChannel channel : channels.values()) {
      channel.close();
    }
  }

  private static MeshChannel channel(String service, String identity, String pki) throws Exception {
    String key = service + "/" + pki + "/" + identity;
    if (!channels.containsKey(key)) {
      String target = targets.get(service);
      assertNotNull(target, "mesh.json has no " + service);
      Identity id = new Identity(meshDir.resolve("pki/ca.crt"), meshDir.resolve(pki + "/" + identity + ".crt"),
                                 meshDir.resolve(pki + "/" + identity + ".key"));
      channels.put(key, MeshChannel.open(target, id, MeshChannel.Options.defaults().withPeer(peers.get(service))));
    }
    return channels.get(key);
  }

  /** Calls a unary method by name with the generated stub's descriptor, proto JSON in and out. */
  private static JsonElement invoke(MeshChannel channel, String call, JsonElement request) throws Exception {
    return invoke(channel, call, request, CallOptions.DEFAULT);
  }

  @SuppressWarnings({"unchecked", "rawtypes"})
  private static JsonElement invoke(MeshChannel channel, String call, JsonElement request, CallOptions options)
      throws Exception {
    MethodDescriptor method = STUBS.stream().flatMap(s -> s.getMethods().stream())
        .filter(m -> m.getFullMethodName().equals(call)).findFirst().orElseThrow();
    Message prototype = (Message) ((MethodDescriptor.PrototypeMarshaller) method.getRequestMarshaller())
        .getMessagePrototype();
    Message.Builder builder = prototype.newBuilderForType();
    JsonFormat.parser().merge(request == null ? "{}" : request.toString(), builder);
    Message reply = (Message) ClientCalls.blockingUnaryCall(channel.channel(), method,
        options.withDeadlineAfter(120, TimeUnit.SECONDS), builder.build());
    return JsonParser.parseString(JsonFormat.printer().print(reply));
  }

  private static JsonElement lookup(JsonElement value, String path) {
    for (String part : path.split("\\.")) {
      if (value != null && value.isJsonArray()) {
        int index = Integer.parseInt(part);
        value = index < value.getAsJsonArray().size() ? value.getAsJsonArray().get(index) : null;
      } else if (value != null && value.isJsonObject()) {
        value = value.getAsJsonObject().get(part);
      } else {
        return null;
      }
    }
    return value;
  }

  /** Replaces ${path} in every string; a whole-string placeholder by the value itself. */
  private static JsonElement substitute(JsonElement value) {
    if (value == null || value.isJsonNull()) {
      return value;
    }
    if (value.isJsonPrimitive() && value.getAsJsonPrimitive().isString()) {
      String text = value.getAsString();
      Matcher whole = PLACEHOLDER.matcher(text);
      if (whole.matches()) {
        return defined(whole.group(1));
      }
      return new JsonPrimitive(PLACEHOLDER.matcher(text).replaceAll(m -> Matcher.quoteReplacement(
          defined(m.group(1)).getAsString())));
    }
    if (value.isJsonArray()) {
      JsonArray out = new JsonArray();
      value.getAsJsonArray().forEach(e -> out.add(substitute(e)));
      return out;
    }
    if (value.isJsonObject()) {
      JsonObject out = new JsonObject();
      value.getAsJsonObject().entrySet().forEach(e -> out.add(e.getKey(), substitute(e.getValue())));
      return out;
    }
    return value;
  }

  private static JsonElement defined(String path) {
    JsonElement value = lookup(variables, path);
    assertNotNull(value, "no value at ${" + path + "}");
    return value;
  }

  private static boolean same(JsonElement got, JsonElement want) {
    if (got != null && got.isJsonPrimitive() && got.getAsJsonPrimitive().isNumber()
        && want.isJsonPrimitive() && want.getAsJsonPrimitive().isNumber()) {
      double a = got.getAsDouble();
      double b = want.getAsDouble();
      return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));
    }
    return want.equals(got);
  }

  private static void checkError(Throwable error, String code, String reason, String domain, String field) {
    if (error == null) {
      fail("want " + code + " " + reason + ", the call succeeded");
    }
    MeshError e = MeshError.from(error);
    assertEquals(Status.Code.valueOf(code), e.code(), e.getMessage());
    if (reason != null) {
      assertTrue(e.reasonIs(reason), "want reason " + reason + " as the contract's enum, got " + e.getMessage());
    }
    if (domain != null) {
      assertEquals(domain, e.domain());
    }
    if (field != null) {
      assertTrue(e.violation(field).isPresent(), "want a violation of " + field + ", got " + e.violations());
    }
  }

  private static String text(JsonObject object, String name) {
    JsonElement value = object.get(name);
    return value == null || value.isJsonNull() ? null : value.getAsString();
  }

  private static Throwable failure(MeshChannel channel, String call, JsonElement request) throws Exception {
    try {
      invoke(channel, call, request);
      return null;
    } catch (io.grpc.StatusRuntimeException e) {
      return e;
    }
  }

  /** Streams zero-filled key parts through Chunks.registerKeys; returns what it threw. */
  private static Throwable registerKeys(MeshChannel channel, JsonObject spec) throws Exception {
    RegisterKeysHeader.Builder header = RegisterKeysHeader.newBuilder();
    JsonFormat.parser().merge(substitute(spec.get("header")).toString(), header);
    List<Chunks.KeyPart> parts = new ArrayList<>();
    for (JsonElement p : spec.getAsJsonArray("parts")) {
      parts.add(new Chunks.KeyPart(KeyPartKind.valueOf(text(p.getAsJsonObject(), "kind")),
                                   new byte[p.getAsJsonObject().get("zeros").getAsInt()]));
    }
    try {
      Chunks.registerKeys(FHEInferenceGrpc.newStub(channel.channel()), header.build(), parts);
      return null;
    } catch (MeshError e) {
      return e;
    }
  }

  private static void runStep(String flowService, JsonObject step) throws Exception {
    if (step.has("exec")) {
      String fixture = System.getenv("PRIVMESH_FIXTURE");
      assertNotNull(fixture, "PRIVMESH_FIXTURE is unset (scripts/dev/clients.sh sets it)");
      List<String> command = new ArrayList<>(List.of(fixture.trim().split("\\s+")));
      step.getAsJsonArray("exec").forEach(a -> command.add(substitute(a).getAsString()));
      Process process = new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT).start();
      String out = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
      assertEquals(0, process.waitFor(), String.join(" ", command));
      variables.add(text(step, "save"), JsonParser.parseString(out));
      return;
    }
    String service = step.has("service") ? text(step, "service") : flowService;
    MeshChannel channel = channel(service, "admin", "pki");
    String call = text(step, "call");
    JsonElement request = substitute(step.get("request"));
    JsonObject expect = step.has("expect") ? step.getAsJsonObject("expect") : new JsonObject();
    if (step.has("register_keys")) {
      JsonObject want = expect.getAsJsonObject("error");
      checkError(registerKeys(channel, step.getAsJsonObject("register_keys")), text(want, "code"),
                 text(want, "reason"), text(want, "domain"), text(want, "field"));
      return;
    }
    if (expect.has("error")) {
      JsonObject want = expect.getAsJsonObject("error");
      checkError(failure(channel, call, request), text(want, "code"), text(want, "reason"), text(want, "domain"),
                 text(want, "field"));
      return;
    }
    JsonElement reply = invoke(channel, call, request);
    if (step.has("save")) {
      variables.add(text(step, "save"), reply);
    }
    if (expect.has("equal")) {
      for (Map.Entry<String, JsonElement> e : expect.getAsJsonObject("equal").entrySet()) {
        JsonElement want = substitute(e.getValue());
        assertTrue(same(lookup(reply, e.getKey()), want),
                   call + ": " + e.getKey() + " = " + lookup(reply, e.getKey()) + ", want " + want);
      }
    }
    if (expect.has("present")) {
      for (JsonElement path : expect.getAsJsonArray("present")) {
        JsonElement got = lookup(reply, path.getAsString());
        assertTrue(got != null && !got.equals(JsonNull.INSTANCE) && !got.equals(new JsonPrimitive("")),
                   call + ": " + path.getAsString() + " is empty");
      }
    }
    if (expect.has("contains")) {
      for (Map.Entry<String, JsonElement> e : expect.getAsJsonObject("contains").entrySet()) {
        JsonObject want = substitute(e.getValue()).getAsJsonObject();
        JsonElement items = lookup(reply, e.getKey());
        boolean found = false;
        for (JsonElement item : items == null ? new JsonArray() : items.getAsJsonArray()) {
          found |= want.entrySet().stream().allMatch(w -> same(lookup(item, w.getKey()), w.getValue()));
        }
        assertTrue(found, call + ": no element of " + e.getKey() + " has " + want);
      }
    }
  }

  @TestFactory
  Stream<DynamicTest> flows() {
    List<DynamicTest> tests = new ArrayList<>();
    for (JsonElement f : cases.getAsJsonArray("flows")) {
      JsonObject flow = f.getAsJsonObject();
      tests.add(DynamicTest.dynamicTest("flow: " + text(flow, "name"), () -> {
        for (JsonElement step : flow.getAsJsonArray("steps")) {
          runStep(text(flow, "service"), step.getAsJsonObject());
        }
      }));
    }
    return tests.stream();
  }

  @TestFactory
  Stream<DynamicTest> badInputs() {
    List<DynamicTest> tests = new ArrayList<>();
    for (JsonElement b : cases.getAsJsonArray("bad_inputs")) {
      JsonObject bad = b.getAsJsonObject();
      tests.add(DynamicTest.dynamicTest("bad input: " + text(bad, "service"), () -> checkError(
          failure(channel(text(bad, "service"), "admin", "pki"), text(bad, "call"), substitute(bad.get("request"))),
          "INVALID_ARGUMENT", null, text(bad, "domain"), text(bad, "field"))));
    }
    return tests.stream();
  }

  @TestFactory
  Stream<DynamicTest> denied() {
    JsonObject denied = cases.getAsJsonObject("denied");
    List<DynamicTest> tests = new ArrayList<>();
    for (JsonElement c : denied.getAsJsonArray("calls")) {
      JsonObject call = c.getAsJsonObject();
      tests.add(DynamicTest.dynamicTest("denied: " + text(call, "service"), () -> checkError(
          failure(channel(text(call, "service"), text(denied, "identity"), "pki"), text(call, "call"), call.get("request")),
          text(denied, "code"), text(denied, "reason"), text(call, "domain"), null)));
    }
    return tests.stream();
  }

  /** Copies a whole file into place atomically, as a rotation writes certificates. */
  private static void install(Path from, Path to) throws IOException {
    Path temporary = to.resolveSibling(to.getFileName() + ".tmp");
    Files.copy(from, temporary, StandardCopyOption.REPLACE_EXISTING);
    Files.move(temporary, to, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
  }

  private static void installIdentity(JsonObject who, Path dir) throws IOException {
    for (String ext : List.of("crt", "key")) {
      install(meshDir.resolve(text(who, "pki") + "/" + text(who, "identity") + "." + ext), dir.resolve("me." + ext));
    }
  }

  @Test
  void aRotatedCertificateIsUsed(@TempDir Path dir) throws Exception {
    JsonObject r = cases.getAsJsonObject("rotation");
    Identity me = new Identity(meshDir.resolve("pki/ca.crt"), dir.resolve("me.crt"), dir.resolve("me.key"));
    installIdentity(r.getAsJsonObject("before"), dir);
    try (MeshChannel channel = MeshChannel.open(targets.get(text(r, "service")), me,
        MeshChannel.Options.defaults().withRefresh(Duration.ofMillis(200)).withPeer(peers.get(text(r, "service"))))) {
      Throwable refused = failure(channel, text(r, "call"), null);
      assertTrue(refused != null && MeshError.from(refused).handshakeRefused(), "the first identity was not refused");
      installIdentity(r.getAsJsonObject("after"), dir);
      Thread.sleep(1000);  // the managers' next refresh
      invoke(channel, text(r, "call"), null, CallOptions.DEFAULT.withWaitForReady());
    }
  }

  @Test
  void anotherServerIdentityIsRefused() throws Exception {
    JsonObject w = cases.getAsJsonObject("wrong_peer");
    Identity admin = new Identity(meshDir.resolve("pki/ca.crt"), meshDir.resolve("pki/admin.crt"),
                                  meshDir.resolve("pki/admin.key"));
    try (MeshChannel channel = MeshChannel.open(targets.get(text(w, "service")), admin,
                                                MeshChannel.Options.defaults().withPeer(peers.get(text(w, "peer_of"))))) {
      Throwable error = failure(channel, text(w, "call"), null);
      assertTrue(error != null && MeshError.from(error).handshakeRefused(),
                 text(w, "service") + " answered as " + text(w, "peer_of") + ": " + error);
    }
  }

  @Test
  void aRefusedHandshakeSaysSo() throws Exception {
    JsonObject h = cases.getAsJsonObject("handshake_refused");
    for (JsonElement identity : h.getAsJsonArray("identities")) {
      Throwable error = failure(channel(text(h, "service"), identity.getAsString(), "foreign-pki"), text(h, "call"), null);
      assertNotNull(error, "a certificate from another CA was accepted");
      MeshError e = MeshError.from(error);
      assertEquals(Status.Code.valueOf(text(h, "code")), e.code(), e.getMessage());
      assertTrue(e.handshakeRefused() && e.getMessage().contains("TLS handshake refused"), e.getMessage());
    }
  }
}
