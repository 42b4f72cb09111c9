// One Messages call through the bridge with the official Anthropic SDK for Node.
// Usage: node anthropic_sdk.mjs <stream|plain> <prompt>
// Environment: ANTHROPIC_BASE_URL (".../anthropic") and ANTHROPIC_API_KEY (the host
// token), which the SDK reads itself: the variables `configure("anthropic-node")` sets.
// SDK 1.x sends the key as a bearer token.
import Anthropic from "@anthropic-ai/sdk";

const [mode, prompt] = process.argv.slice(2);
const client = new Anthropic({
  maxRetries: 0,
  timeout: 60_000,
});
const request = {
  model: "claude-sonnet-4-6",
  max_tokens: 256,
  messages: [{ role: "user", content: prompt }],
};

let text = "";
if (mode === "stream") {
  const stream = client.messages.stream(request);
  for await (const event of stream) {
    if (event.type === "content_block_delta" && event.delta.type === "text_delta") {
      text += event.delta.text;
    }
  }
} else {
  const message = await client.messages.create(request);
  text = message.content.filter((b) => b.type === "text").map((b) => b.text).join("");
}
console.log(text);
