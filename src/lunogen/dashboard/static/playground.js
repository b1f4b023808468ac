// The playground: send a message through the API channel and show the reply as it streams.
// CSP-clean: no inline code, no eval, text only (never innerHTML).
(function () {
  "use strict";

  var form = document.getElementById("playground-form");
  if (!form) return;
  var textarea = form.querySelector("textarea");
  var button = form.querySelector("button[type=submit]");
  var list = document.getElementById("conversation");
  var empty = document.getElementById("playground-empty");
  var status = document.getElementById("playground-status");
  var alerts = document.getElementById("playground-error");
  var meta = document.querySelector('meta[name="csrf-token"]');
  var agentId = form.dataset.agent;
  var contact = form.dataset.contact;
  var agentName = form.dataset.agentName || "Agent";
  var busy = false;

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function say(text) {
    status.textContent = text;
  }

  function fail(text) {
    alerts.textContent = "";
    if (text) alerts.appendChild(element("p", "error", text));
  }

  function bubble(role, text) {
    var item = element("li", "msg msg-" + role);
    item.appendChild(element("span", "who", role === "user" ? "You" : agentName));
    var body = element("div", "text", text);
    item.appendChild(body);
    list.appendChild(item);
    empty.hidden = true;
    return { item: item, body: body };
  }

  function scrollTo(node) {
    if (node.scrollIntoView) node.scrollIntoView({ block: "nearest" });
  }

  // Server-sent events from a fetch body: yields {event, data} for each complete event.
  function parseEvents(buffer, onEvent) {
    var parts = buffer.split(/\r?\n\r?\n/);
    var rest = parts.pop();
    parts.forEach(function (block) {
      var name = "message";
      var data = [];
      block.split(/\r?\n/).forEach(function (line) {
        if (!line || line.charAt(0) === ":") return;
        var colon = line.indexOf(":");
        var field = colon < 0 ? line : line.slice(0, colon);
        var value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = value;
        else if (field === "data") data.push(value);
      });
      if (!data.length) return;
      var parsed;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch (error) {
        return;
      }
      onEvent(name, parsed);
    });
    return rest;
  }

  function problem(response, body) {
    var text = (body && (body.message || body.error)) || "The message could not be sent (HTTP " + response.status + ").";
    if (response.status === 409) return text + " Deploy or start the agent from its page.";
    if (response.status === 402 || (body && body.available_credits !== undefined)) {
      return text + " Buy credits on the Billing page.";
    }
    return text;
  }

  function showCost(reply, messageId) {
    var url = "/agents/" + encodeURIComponent(agentId) + "/playground/cost/" + encodeURIComponent(messageId);
    return fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (cost) {
        if (!cost) return;
        reply.item.appendChild(element("p", "cost muted", cost.label));
        say("Reply received: " + cost.label + ".");
      })
      .catch(function () {
        return null;
      });
  }

  function toolsOf(reply) {
    if (!reply.tools) {
      reply.tools = element("ul", "tools");
      reply.tools.setAttribute("aria-label", "Tool calls");
      reply.item.insertBefore(reply.tools, reply.body);
    }
    return reply.tools;
  }

  function onTool(reply, data) {
    var tools = toolsOf(reply);
    if (data.status === "started") {
      var entry = element("li", "tool-running", "Using " + data.name + "…");
      entry.dataset.tool = data.name;
      tools.appendChild(entry);
      say("The agent is using the tool " + data.name + ".");
      return;
    }
    var running = tools.querySelectorAll("li.tool-running");
    var match = null;
    for (var i = 0; i < running.length; i++) {
      if (running[i].dataset.tool === data.name) match = running[i];
    }
    if (!match) {
      match = element("li");
      tools.appendChild(match);
    }
    var ok = data.status === "ok";
    match.className = ok ? "tool-ok" : "tool-failed";
    match.textContent = (ok ? "Used " : "Failed: ") + data.name;
  }

  function finish() {
    busy = false;
    button.disabled = false;
    form.removeAttribute("aria-busy");
  }

  function send() {
    var text = textarea.value;
    if (busy || !text.trim()) return;
    busy = true;
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    fail("");
    say("Sending…");
    var mine = bubble("user", text);
    textarea.value = "";
    scrollTo(mine.item);
    var reply = null;
    var ended = false;

    function replyBubble() {
      if (!reply) {
        reply = bubble("assistant", "");
        reply.item.setAttribute("aria-busy", "true");
      }
      return reply;
    }

    function onEvent(name, data) {
      if (name === "delta") {
        var target = replyBubble();
        target.body.textContent += data.text || "";
        scrollTo(target.item);
        say("The agent is writing…");
      } else if (name === "tool") {
        onTool(replyBubble(), data);
      } else if (name === "done") {
        ended = true;
        var done = replyBubble();
        done.body.textContent = data.text || "";
        done.item.removeAttribute("aria-busy");
        say("Reply received.");
        showCost(done, data.message_id);
      } else if (name === "error") {
        ended = true;
        if (reply) reply.item.removeAttribute("aria-busy");
        mine.item.classList.add("msg-failed");
        fail(
          data.retrying
            ? "The reply is taking longer than expected; it will appear in the conversation when you reload."
            : "The agent could not answer: " + String(data.error || "unknown error").replace(/\.$/, "") + "."
        );
        say("");
      }
    }

    fetch("/api/v1/agents/" + encodeURIComponent(agentId) + "/messages", {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        "X-CSRF-Token": meta ? meta.content : "",
      },
      body: JSON.stringify({ text: text, contact: contact, stream: true, wait_seconds: 120 }),
    })
      .then(function (response) {
        if (!response.ok) {
          return response
            .json()
            .catch(function () {
              return null;
            })
            .then(function (body) {
              // Not accepted: nothing was stored, so the text goes back to the field.
              list.removeChild(mine.item);
              if (!list.children.length) empty.hidden = false;
              textarea.value = text;
              ended = true;
              say("");
              fail(problem(response, body));
            });
        }
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) {
              parseEvents(buffer + "\n\n", onEvent);
              return;
            }
            buffer = parseEvents(buffer + decoder.decode(chunk.value, { stream: true }), onEvent);
            return pump();
          });
        }
        return pump();
      })
      .catch(function () {
        return null; // a network failure: told below, as a stream cut short is
      })
      .then(function () {
        if (!ended) {
          if (reply) reply.item.removeAttribute("aria-busy");
          say("");
          fail("The connection closed before the reply ended: reload the page to see it.");
        }
        finish();
        textarea.focus();
      });
  }

  textarea.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    send();
  });
  if (list.lastElementChild) scrollTo(list.lastElementChild);
})();
