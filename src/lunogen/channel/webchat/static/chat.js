/* LunoGen web chat page. No third-party code; served with a CSP that allows only this origin.
 *
 * The visitor id is a random value kept in this page's localStorage, on LunoGen's origin
 * (inside the widget's frame, browsers keep it apart for each site that embeds the chat). It
 * is not a cookie and is never sent to the embedding site. It is traded for a short-lived
 * visitor token (POST /chat/<id>/session) that authenticates messages and history.
 */
(function () {
  "use strict";

  var root = document.getElementById("chat");
  if (!root) return;
  var channel = root.getAttribute("data-channel");
  var hostOrigin = root.getAttribute("data-host-origin") || "";
  var agentName = root.getAttribute("data-agent-name") || "Assistant";
  var base = "/chat/" + encodeURIComponent(channel);
  var log = document.getElementById("chat-log");
  var announce = document.getElementById("chat-announce");
  var statusLine = document.getElementById("chat-status");
  var form = document.getElementById("chat-form");
  var input = document.getElementById("chat-input");
  var send = document.getElementById("chat-send");
  var closeButton = document.getElementById("chat-close");

  var storageKey = "lunogen-chat:visitor:" + channel;
  var visitorId = loadVisitorId();
  var token = null;
  var tokenExpires = 0;
  var busy = false;
  var shown = {}; // message ids already in the log

  function randomId() {
    var bytes = new Uint8Array(18);
    window.crypto.getRandomValues(bytes);
    var out = "";
    for (var i = 0; i < bytes.length; i++) out += ("0" + bytes[i].toString(16)).slice(-2);
    return out;
  }

  function loadVisitorId() {
    var value = null;
    try {
      value = window.localStorage.getItem(storageKey);
      if (!value || !/^[A-Za-z0-9_-]{16,64}$/.test(value)) {
        value = randomId();
        window.localStorage.setItem(storageKey, value);
      }
    } catch (e) {
      value = value || randomId(); // storage blocked: the conversation lasts this page view
    }
    return value;
  }

  function setStatus(text) {
    statusLine.textContent = text || "";
    statusLine.hidden = !text;
  }

  function setBusy(value) {
    busy = value;
    send.setAttribute("aria-disabled", value ? "true" : "false");
  }

  function bubble(role, text, id) {
    var p = document.createElement("p");
    p.className = "msg " + (role === "user" ? "visitor" : "agent");
    var who = document.createElement("span");
    who.className = "who visually-hidden";
    who.textContent = (role === "user" ? "You" : agentName) + ": ";
    var body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    p.appendChild(who);
    p.appendChild(body);
    if (id) {
      p.setAttribute("data-id", id);
      shown[id] = p;
    }
    log.appendChild(p);
    log.scrollTop = log.scrollHeight;
    return p;
  }

  function say(text) {
    // New messages reach screen readers once, whole, through the live region.
    var line = document.createElement("p");
    line.textContent = agentName + ": " + text;
    announce.appendChild(line);
    while (announce.childNodes.length > 3) announce.removeChild(announce.firstChild);
  }

  async function problem(response) {
    try {
      var body = await response.json();
      return body.message || body.error || "Something went wrong.";
    } catch (e) {
      return "Something went wrong (" + response.status + ").";
    }
  }

  async function openSession() {
    var response = await fetch(base + "/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ visitor_id: visitorId }),
      credentials: "omit",
      cache: "no-store",
    });
    if (!response.ok) {
      var reason = await problem(response);
      if (response.status === 409) reason = "This chat is offline right now. " + reason;
      throw new Error(reason);
    }
    var body = await response.json();
    token = body.token;
    tokenExpires = Date.now() + (body.expires_in - 60) * 1000;
  }

  async function authorized(path, options) {
    for (var attempt = 0; attempt < 2; attempt++) {
      if (!token || Date.now() >= tokenExpires) await openSession();
      var opts = Object.assign({ credentials: "omit", cache: "no-store" }, options || {});
      opts.headers = Object.assign({}, opts.headers || {}, { Authorization: "Bearer " + token });
      var response = await fetch(base + path, opts);
      if (response.status !== 401) return response;
      token = null; // expired or signed with a retired key: ask for a new one once
    }
    return response;
  }

  async function loadHistory() {
    var response = await authorized("/history?limit=50", { method: "GET" });
    if (!response.ok) throw new Error(await problem(response));
    var body = await response.json();
    body.messages.forEach(function (m) {
      if (shown[m.id]) return;
      var p = bubble(m.role, m.text, m.id);
      if (m.role === "user" && (m.status === "failed" || m.status === "skipped")) {
        p.classList.add("failed");
      }
    });
    return body.messages;
  }

  function parseEvents(buffer, handle) {
    var blocks = buffer.split("\n\n");
    var rest = blocks.pop();
    blocks.forEach(function (block) {
      var name = null;
      var data = null;
      block.split("\n").forEach(function (line) {
        if (line.indexOf("event: ") === 0) name = line.slice(7);
        else if (line.indexOf("data: ") === 0) data = line.slice(6);
      });
      if (name && data) handle(name, JSON.parse(data));
    });
    return rest;
  }

  // A message keeps its id when it is sent again after a network failure, so that the server
  // answers it once whichever attempt reached it.
  function offerRetry(mine, text, id) {
    var again = document.createElement("button");
    again.type = "button";
    again.className = "retry";
    again.textContent = "Send again";
    again.addEventListener("click", function () {
      if (busy) return;
      mine.remove();
      sendMessage(text, id);
    });
    mine.appendChild(again);
  }

  async function sendMessage(text, id) {
    setBusy(true);
    setStatus("");
    id = id || randomId();
    var mine = bubble("user", text);
    var reply = null;
    var replyText = "";
    var finished = false;
    try {
      var response = await authorized("/messages", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ text: text, id: id }),
      });
      if (!response.ok) {
        mine.classList.add("failed");
        setStatus(await problem(response)); // 429: the server says which limit and how long
        return;
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      var handle = function (name, data) {
        if (name === "delta") {
          if (!reply) {
            reply = bubble("assistant", "");
            reply.classList.add("writing");
            reply.setAttribute("aria-busy", "true");
          }
          replyText += data.text;
          reply.querySelector(".text").textContent = replyText;
          log.scrollTop = log.scrollHeight;
        } else if (name === "done") {
          finished = true;
          if (!reply) reply = bubble("assistant", "");
          reply.querySelector(".text").textContent = data.text;
          reply.classList.remove("writing");
          reply.removeAttribute("aria-busy");
          if (data.reply_id) {
            reply.setAttribute("data-id", data.reply_id);
            shown[data.reply_id] = reply;
          }
          if (data.message_id) shown[data.message_id] = mine;
          say(data.text);
        } else if (name === "error") {
          finished = true;
          if (reply) reply.remove();
          setStatus(data.error);
          if (data.retrying) laterFromHistory(6);
          else mine.classList.add("failed");
        }
      };
      for (;;) {
        var chunk = await reader.read();
        if (chunk.done) break;
        buffer = parseEvents(buffer + decoder.decode(chunk.value, { stream: true }), handle);
      }
      if (!finished) {
        setStatus("The connection was interrupted; the reply will appear when it is ready.");
        laterFromHistory(6);
      }
    } catch (e) {
      mine.classList.add("failed");
      offerRetry(mine, text, id);
      setStatus("The message could not be sent (" + (e.message || "network error") + ").");
    } finally {
      if (reply) reply.classList.remove("writing");
      setBusy(false);
    }
  }

  function laterFromHistory(tries) {
    if (tries <= 0) return;
    window.setTimeout(function () {
      var before = Object.keys(shown).length;
      loadHistory()
        .then(function (messages) {
          if (Object.keys(shown).length > before) {
            setStatus("");
            var last = messages[messages.length - 1];
            if (last && last.role !== "user") say(last.text);
          } else {
            laterFromHistory(tries - 1);
          }
        })
        .catch(function () { laterFromHistory(tries - 1); });
    }, 5000);
  }

  function submit() {
    var text = input.value.trim();
    if (!text) {
      setStatus("Write a message first.");
      input.focus();
      return;
    }
    if (busy) {
      setStatus("Please wait for the reply before sending another message.");
      return;
    }
    input.value = "";
    sendMessage(text);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    submit();
  });

  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape") {
      toHost("close");
    }
  });

  // Talking to the widget on the embedding page (only that origin, only these notes).
  function toHost(type) {
    if (hostOrigin && window.parent !== window) {
      window.parent.postMessage({ lunogen: "chat", type: type }, hostOrigin);
    }
  }

  window.addEventListener("message", function (event) {
    if (!hostOrigin || event.origin !== hostOrigin || event.source !== window.parent) return;
    var data = event.data;
    if (data && data.lunogen === "chat" && data.type === "focus") input.focus();
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && event.target !== input) toHost("close");
  });

  if (closeButton) {
    closeButton.addEventListener("click", function () {
      toHost("close");
    });
  }

  toHost("ready"); // the page is showing: the framing site is allowed (CSP frame-ancestors)
  loadHistory().catch(function (e) {
    setStatus(e.message);
  });
  if (!hostOrigin) input.focus();
})();
