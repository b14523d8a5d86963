// The playground: a conversation with any servable chat model, streamed from
// /v1/chat/completions (server-sent events read from fetch's ReadableStream).

import { call } from "./api.js";
import { el, fmtSeconds } from "./dom.js";

let chatController = null;

export function updateModelChoices(models) {
  const select = document.getElementById("chat-model");
  const names = models.filter((m) => m.capabilities.includes("chat")).map((m) => m.id);
  const current = [...select.options].map((o) => o.value);
  if (names.join("\n") === current.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(...names.map((name) => el("option", name, { value: name })));
  if (names.includes(chosen)) select.value = chosen;
}

// The data lines of server-sent events, one complete event at a time.
async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = event
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) yield data;
    }
  }
}

const conversation = []; // the messages so far, sent again with each new one

function addTurn(role, text, state) {
  const log = document.getElementById("chat-log");
  const turn = el("pre", text, { class: "turn", "data-role": role, "data-state": state });
  log.append(turn);
  log.scrollTop = log.scrollHeight;
  return turn;
}

function newChat() {
  if (chatController) chatController.abort();
  conversation.length = 0;
  document.getElementById("chat-log").replaceChildren();
  document.getElementById("chat-stats").textContent = "";
}

async function sendChat(event) {
  event.preventDefault();
  if (chatController) return;
  const prompt = document.getElementById("chat-prompt");
  const stats = document.getElementById("chat-stats");
  const send = document.getElementById("chat-send");
  const stop = document.getElementById("chat-stop");
  const log = document.getElementById("chat-log");
  const question = { role: "user", content: prompt.value };
  const body = {
    model: document.getElementById("chat-model").value,
    messages: [...conversation, question],
    max_tokens: Number(document.getElementById("chat-max-tokens").value) || 128,
    temperature: Number(document.getElementById("chat-temperature").value),
    stream: true,
    stream_options: { include_usage: true },
  };
  addTurn("user", question.content, "done");
  const reply = addTurn("assistant", "", "waiting");
  prompt.value = "";
  stats.textContent = "";
  send.disabled = true;
  stop.disabled = false;
  chatController = new AbortController();
  const started = performance.now();
  let firstToken = null;
  let usage = null;
  let answer = "";
  try {
    const response = await call("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: chatController.signal,
    });
    if (!response.ok) {
      const refusal = await response.json().catch(() => ({}));
      throw new Error((refusal.error && refusal.error.message) || `HTTP ${response.status}`);
    }
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
      if (chunk.usage) usage = chunk.usage;
      const text = chunk.choices && chunk.choices[0] && chunk.choices[0].delta.content;
      if (text) {
        if (firstToken === null) firstToken = performance.now() - started;
        reply.dataset.state = "streaming";
        reply.append(text);
        answer += text;
        log.scrollTop = log.scrollHeight;
      }
    }
    reply.dataset.state = "done";
    conversation.push(question, { role: "assistant", content: answer });
    const seconds = (performance.now() - started) / 1000;
    const parts = [`${seconds.toFixed(2)} s`];
    if (firstToken !== null) parts.push(`first token ${fmtSeconds(firstToken / 1000)}`);
    if (usage) {
      parts.push(`${usage.prompt_tokens} in, ${usage.completion_tokens} out`);
      if (firstToken !== null && seconds > firstToken / 1000) {
        parts.push(`${(usage.completion_tokens / (seconds - firstToken / 1000)).toFixed(1)} tokens/s`);
      }
    }
    stats.textContent = parts.join(" · ");
  } catch (error) {
    if (error.name === "AbortError") {
      reply.dataset.state = "done";
      stats.textContent = "stopped";
      // Kept unless "New chat" is what stopped it.
      if (answer && reply.isConnected) conversation.push(question, { role: "assistant", content: answer });
    } else {
      // The question stays out of the conversation: it can be asked again.
      reply.dataset.state = "error";
      reply.append(`${answer ? "\n\n" : ""}Error: ${error.message}`);
      prompt.value = question.content;
    }
  } finally {
    send.disabled = false;
    stop.disabled = true;
    chatController = null;
  }
}

export function startPlayground() {
  document.getElementById("chat-form").addEventListener("submit", sendChat);
  document.getElementById("chat-stop").addEventListener("click", () => chatController && chatController.abort());
  document.getElementById("chat-new").addEventListener("click", newChat);
  document.getElementById("chat-prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      document.getElementById("chat-form").requestSubmit();
    }
  });
}
