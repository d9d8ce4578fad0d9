// shelf's public HTTP API as the page uses it: the same routes and the same
// keys as every other client. Knows nothing of the page.

const KEY = "shelf.apiKey";

let onUnauthorized = () => {};

/** The key the user gave, or "". */
export function apiKey() {
  return localStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}

/** Called on every 401: the page asks for a key again. */
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** A request with the key; a non-2xx answer throws an ApiError. */
export async function request(method, path, body, signal) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (!response.ok) {
    const error = new ApiError(response.status, await errorMessage(response));
    if (response.status === 401) onUnauthorized(error);
    throw error;
  }
  return response;
}

/** A request whose answer is JSON, or null when it has no body (Ollama's
 * delete and copy answer 200 with none). */
export async function json(method, path, body) {
  const response = await request(method, path, body);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** The message of an error in OpenAI's or Ollama's shape. */
async function errorMessage(response) {
  try {
    const body = await response.json();
    const error = body.error;
    return (typeof error === "string" ? error : error?.message) || response.statusText;
  } catch {
    return response.statusText || `HTTP ${response.status}`;
  }
}

/** The lines of a streamed body, as they arrive. */
export async function* lines(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    let end;
    while ((end = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, end).replace(/\r$/, "");
      pending = pending.slice(end + 1);
    }
  }
  if (pending) yield pending;
}

/** The data of each server-sent event, parsed, until [DONE]. */
export async function* events(response) {
  for await (const line of lines(response)) {
    if (!line.startsWith("data:")) continue;
    const data = line.slice(5).trim();
    if (data === "[DONE]") return;
    yield JSON.parse(data);
  }
}

/** Each line of an NDJSON body, parsed. */
export async function* records(response) {
  for await (const line of lines(response)) {
    if (line.trim()) yield JSON.parse(line);
  }
}
