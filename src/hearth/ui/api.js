// Requests from the dashboard: the admin key added when there is one, asked for when the server
// refuses a request, and kept in this tab's sessionStorage.

const KEY_STORAGE = "hearth.adminKey";

let keyPrompt = null; // one prompt at a time, shared by every request that got a 401
let keyDeclined = false; // cancelled: polls stop asking until "Admin key" is clicked

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// `problem`: the server's reason for refusing the last key, shown in the prompt.
export function askForKey(asked = false, problem = "") {
  if (keyPrompt) return keyPrompt;
  if (keyDeclined && !asked) return Promise.resolve(false);
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  input.value = "";
  document.getElementById("key-problem").textContent = problem;
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        keyPrompt = null;
        if (dialog.returnValue === "save" && input.value.trim()) {
          sessionStorage.setItem(KEY_STORAGE, input.value.trim());
          keyDeclined = false;
          resolve(true);
        } else {
          keyDeclined = true;
          resolve(false);
        }
      },
      { once: true },
    );
    dialog.showModal();
  });
  return keyPrompt;
}

// fetch() that adds the key and, when it is refused (401; 403 on /admin: not the admin key), asks
// for the admin key and tries once more.
export async function call(path, options = {}) {
  const send = () =>
    fetch(path, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
  let response = await send();
  const refused = response.status === 401 || (response.status === 403 && path.startsWith("/admin"));
  if (refused) {
    const answer = await response.clone().json().catch(() => ({}));
    const problem = sessionStorage.getItem(KEY_STORAGE) ? (answer.error && answer.error.message) || "" : "";
    if (await askForKey(false, problem)) response = await send();
  }
  return response;
}

export async function getJSON(path) {
  const response = await call(path);
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    const message = answer.error && answer.error.message;
    const error = new Error(message || `${path}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}
