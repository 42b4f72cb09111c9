// One call through the bridge with the official OpenAI SDK for Node.
// Usage: node openai_sdk.mjs <chat|responses> <stream|plain> <prompt>
// Environment: OPENAI_BASE_URL (".../openai/v1") and OPENAI_API_KEY (the host
// token), which the SDK reads itself: the variables `configure("openai-node")` sets.
import OpenAI from "openai";

const [api, mode, prompt] = process.argv.slice(2);
const stream = mode === "stream";
const client = new OpenAI({
  maxRetries: 0,
  timeout: 60_000,
});

let text = "";
if (api === "chat") {
  const request = { model: "gpt-5", messages: [{ role: "user", content: prompt }] };
  if (stream) {
    const chunks = await client.chat.completions.create({
      ...request,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of chunks) text += chunk.choices[0]?.delta?.content ?? "";
  } else {
    const completion = await client.chat.completions.create(request);
    text = completion.choices[0].message.content;
  }
} else if (api === "responses") {
  const request = { model: "gpt-5", input: prompt };
  if (stream) {
    const events = await client.responses.create({ ...request, stream: true });
    for await (const event of events) {
      if (event.type === "response.output_text.delta") text += event.delta;
    }
  } else {
    const response = await client.responses.create(request);
    text = response.output_text;
  }
} else {
  throw new Error(`unknown api ${api}`);
}
console.log(text);
