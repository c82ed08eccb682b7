// wardgate pages: passkey ceremonies (WebAuthn) against /api/v1/auths/mfa/passkeys/*.
// No inline script: this file runs under the CSP's script-src 'self'. Every element it drives
// carries data-passkey="signin | second-factor | register | step-up" and sits in a
// [data-passkey-box] that stays hidden where the browser has no WebAuthn (then nothing is offered).
"use strict";
(() => {
  const supported = typeof window.PublicKeyCredential === "function" && !!navigator.credentials;
  const base = document.body.dataset.base || "";
  const api = `${base}/api/v1/auths/mfa/passkeys`;

  // WebAuthn carries binary fields; the API speaks base64url (RFC 4648 §5) in JSON.
  const toBytes = (text) => {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
  };
  const toText = (buffer) => {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };

  class Refusal extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function post(path, body) {
    const response = await fetch(api + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body || {}),
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch {
      answer = null;
    }
    if (!response.ok) {
      const detail = answer && typeof answer.detail === "string" ? answer.detail : null;
      throw new Refusal(detail || `The server refused the passkey (HTTP ${response.status}).`, response.status);
    }
    return answer;
  }

  async function create(options) {
    options.challenge = toBytes(options.challenge);
    options.user.id = toBytes(options.user.id);
    for (const c of options.excludeCredentials || []) c.id = toBytes(c.id);
    const credential = await navigator.credentials.create({ publicKey: options });
    const r = credential.response;
    return asJSON(credential, {
      attestationObject: toText(r.attestationObject),
      transports: typeof r.getTransports === "function" ? r.getTransports() : [],
    });
  }

  async function get(options) {
    options.challenge = toBytes(options.challenge);
    for (const c of options.allowCredentials || []) c.id = toBytes(c.id);
    const credential = await navigator.credentials.get({ publicKey: options });
    const r = credential.response;
    return asJSON(credential, {
      authenticatorData: toText(r.authenticatorData),
      signature: toText(r.signature),
      userHandle: r.userHandle ? toText(r.userHandle) : null,
    });
  }

  // A PublicKeyCredential as the server reads it (WebAuthn's JSON form): the ceremony's own fields
  // in `response`, beside what every credential carries.
  function asJSON(credential, fields) {
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: { clientDataJSON: toText(credential.response.clientDataJSON), ...fields },
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment,
    };
  }

  // What people read when the browser, not the server, says no (DOMException names).
  function message(error) {
    if (error instanceof Refusal) return error.message;
    switch (error && error.name) {
      case "NotAllowedError":
        return "No passkey was used: the request was cancelled or timed out, or this device has no passkey for this site.";
      case "InvalidStateError":
        return "This device already holds a passkey for your account.";
      case "SecurityError":
        return "Passkeys are not available at this address of the site.";
      case "AbortError":
        return "The passkey request was cancelled.";
      default:
        return "The passkey did not work. Please try again.";
    }
  }

  // Run one ceremony for an element: busy while it runs, errors shown in its box's alert.
  function ceremony(element, run) {
    const box = element.closest("[data-passkey-box]");
    const alert = box ? box.querySelector("[data-passkey-error]") : null;
    const button = element.matches("button") ? element : element.querySelector("button[type=submit]");
    return async (event) => {
      event.preventDefault();
      if (button.disabled) return;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      if (alert) {
        alert.hidden = true;
        alert.textContent = "";
      }
      try {
        await run();
      } catch (error) {
        if (alert) {
          alert.textContent = message(error);
          alert.hidden = false;
        }
      } finally {
        button.disabled = false;
        button.removeAttribute("aria-busy");
      }
    };
  }

  const go = (path) => window.location.assign(path);

  async function signIn(element, mfaToken) {
    const begun = await post("/signin/begin", mfaToken ? { mfa_token: mfaToken } : {});
    const credential = await get(begun.options);
    const user = await post("/signin/finish", { ceremony: begun.ceremony, credential });
    go(user && user.role === "pending" ? `${base}/account` : element.dataset.redirect || `${base}/`);
  }

  async function stepUp(element) {
    const begun = await post("/step-up/begin");
    const credential = await get(begun.options);
    await post("/step-up/finish", { ceremony: begun.ceremony, credential });
    go(element.dataset.return || `${base}/account?notice=stepped-up#mfa`);
  }

  async function register(form) {
    let begun;
    try {
      begun = await post("/register/begin");
    } catch (error) {
      // A change to the factors of an account that has one needs "Confirm it is you" first.
      if (error instanceof Refusal && error.status === 403 && form.dataset.hasFactor === "true") {
        go(`${base}/account?confirm=1#step-up`);
        return;
      }
      throw error;
    }
    const credential = await create(begun.options);
    const name = form.elements.namedItem("name").value.trim() || "Passkey";
    const added = await post("/register/finish", { ceremony: begun.ceremony, name, credential });
    const done = `${base}/account?notice=passkey-added#mfa`;
    const panel = document.getElementById("passkey-codes");
    if (!added.recovery_codes || !panel) {
      go(done);
      return;
    }
    // The account's first factor: its recovery codes, shown this once (never stored in the page).
    const list = panel.querySelector("ol");
    list.replaceChildren(
      ...added.recovery_codes.map((code) => {
        const item = document.createElement("li");
        const text = document.createElement("code");
        text.textContent = code;
        item.append(text);
        return item;
      }),
    );
    form.hidden = true;
    panel.hidden = false;
    const heading = panel.querySelector("h2");
    heading.tabIndex = -1;
    heading.focus();
  }

  for (const box of document.querySelectorAll("[data-passkey-box]")) box.hidden = !supported;
  for (const note of document.querySelectorAll("[data-passkey-unsupported]")) note.hidden = supported;
  if (!supported) return;

  for (const element of document.querySelectorAll("[data-passkey]")) {
    const kind = element.dataset.passkey;
    if (kind === "signin") {
      element.addEventListener("click", ceremony(element, () => signIn(element, null)));
    } else if (kind === "second-factor") {
      element.addEventListener("click", ceremony(element, () => signIn(element, element.dataset.token)));
    } else if (kind === "step-up") {
      element.addEventListener("click", ceremony(element, () => stepUp(element)));
    } else if (kind === "register") {
      element.addEventListener("submit", ceremony(element, () => register(element)));
    }
  }
})();
