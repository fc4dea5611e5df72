package dev.privmesh.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The shared "retries" case: the service config retries exactly the methods the contracts mark idempotent. */
class ServiceConfigTest {
  @Test
  @SuppressWarnings("unchecked")
  void retriesIdempotentMethodsOnly() throws IOException {
    JsonObject retries = JsonParser.parseString(Files.readString(Path.of("..", "testdata", "cases.json")))
        .getAsJsonObject().getAsJsonObject("retries");
    Map<String, Map<String, Object>> policies = new HashMap<>();
    for (Object entry : (List<Object>) ServiceConfig.forContracts(Duration.ofMillis(1500)).get("methodConfig")) {
      Map<String, Object> config = (Map<String, Object>) entry;
      assertEquals("1.500s", config.get("timeout"));
      for (Object name : (List<Object>) config.get("name")) {
        Map<String, Object> n = (Map<String, Object>) name;
        String key = n.get("service") + "/" + n.get("method");
        assertTrue(!policies.containsKey(key), key + " is configured twice");
        policies.put(key, (Map<String, Object>) config.get("retryPolicy"));
      }
    }
    for (JsonElement call : retries.getAsJsonArray("retried")) {
      Map<String, Object> policy = policies.get(call.getAsString());
      assertTrue(policy != null, call + " is not retried");
      assertEquals(retries.get("max_attempts").getAsDouble(), (Double) policy.get("maxAttempts"));
      assertEquals(List.of("UNAVAILABLE"), policy.get("retryableStatusCodes"));
    }
    for (JsonElement call : retries.getAsJsonArray("not_retried")) {
      assertTrue(policies.containsKey(call.getAsString()), call + " is not configured");
      assertNull(policies.get(call.getAsString()), call + " is retried");
    }
  }
}
