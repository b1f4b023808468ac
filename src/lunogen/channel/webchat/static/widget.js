/* LunoGen web chat widget.
 *
 *   <script src="https://<lunogen>/chat/widget.js" data-channel="<channel id>" async></script>
 *
 * Mounts one element of its own (a launcher button and, once opened, a frame of
 * https://<lunogen>/chat/<channel id>?embed=1) at the end of the page. It loads nothing but
 * LunoGen URLs, sets no cookie, stores nothing on this site, and touches nothing of the page
 * but its own element. The conversation runs inside the frame, on LunoGen's origin.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script) {
    var candidates = document.querySelectorAll("script[data-channel][src*='/chat/widget.js']");
    script = candidates[candidates.length - 1];
  }
  if (!script) return;
  var channel = script.getAttribute("data-channel") || "";
  if (!/^[A-Za-z0-9-]{1,36}$/.test(channel)) return;
  var lunogen = new URL(script.src, document.baseURI).origin;

  var MARK = "data-lunogen-chat";
  var Z = "2147483000";
  var READY_GRACE_MS = 2500;
  var OPEN_TIMEOUT_MS = 15000;

  function css(element, rules) {
    for (var name in rules) element.style.setProperty(name, rules[name]);
  }

  function mount() {
    if (document.querySelector("[" + MARK + '="' + channel + '"]')) return; // mounted once
    var host = document.createElement("div");
    host.setAttribute(MARK, channel);
    css(host, { position: "fixed", right: "16px", bottom: "16px", "z-index": Z, width: "0", height: "0" });
    // A shadow root keeps the page's styles away from the widget's parts (open: assistive
    // technology and test tools see into it; the conversation itself is in the frame).
    var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;

    var panel = document.createElement("div");
    panel.id = "lunogen-chat-panel";
    panel.hidden = true;
    css(panel, {
      position: "fixed", right: "16px", bottom: "84px",
      width: "min(380px, calc(100vw - 32px))", height: "min(600px, calc(100vh - 108px))",
      "border-radius": "12px", overflow: "hidden", background: "#fff",
      "box-shadow": "0 8px 32px rgb(0 0 0 / 25%)", display: "none",
    });

    var notice = document.createElement("p");
    notice.setAttribute("role", "alert");
    notice.hidden = true;
    css(notice, {
      margin: "0", padding: "1rem", font: "15px/1.5 system-ui, sans-serif", color: "#b42318",
    });
    notice.textContent = "This chat is not available on this site.";

    var button = document.createElement("button");
    button.type = "button";
    button.textContent = "Chat";
    button.setAttribute("aria-expanded", "false");
    button.setAttribute("aria-controls", panel.id);
    button.setAttribute("aria-label", "Open the chat");
    css(button, {
      position: "fixed", right: "16px", bottom: "16px", "min-width": "56px", height: "56px",
      padding: "0 18px", border: "0", "border-radius": "28px", background: "#3b5bdb",
      color: "#fff", font: "600 16px/1 system-ui, sans-serif", cursor: "pointer",
      "box-shadow": "0 4px 16px rgb(0 0 0 / 25%)",
    });
    button.addEventListener("focus", function () {
      css(button, { outline: "3px solid #1d2430", "outline-offset": "3px" });
    });
    button.addEventListener("blur", function () {
      button.style.removeProperty("outline");
    });

    var frame = null;
    var ready = false;
    var open = false;

    function showNotice() {
      if (ready) return;
      if (frame) frame.hidden = true;
      if (frame) css(frame, { display: "none" });
      notice.hidden = false;
    }

    function createFrame() {
      frame = document.createElement("iframe");
      frame.title = "Chat";
      frame.src = lunogen + "/chat/" + encodeURIComponent(channel) +
        "?embed=1&host=" + encodeURIComponent(window.location.origin);
      frame.setAttribute("referrerpolicy", "origin");
      css(frame, { width: "100%", height: "100%", border: "0", display: "block" });
      frame.addEventListener("load", function () {
        window.setTimeout(showNotice, READY_GRACE_MS); // refused frames load an error page
      });
      window.setTimeout(showNotice, OPEN_TIMEOUT_MS);
      panel.appendChild(frame);
    }

    function focusChat() {
      if (!frame || !ready) return;
      frame.focus();
      frame.contentWindow.postMessage({ lunogen: "chat", type: "focus" }, lunogen);
    }

    function setOpen(value) {
      open = value;
      panel.hidden = !value;
      css(panel, { display: value ? "block" : "none" });
      button.setAttribute("aria-expanded", value ? "true" : "false");
      button.setAttribute("aria-label", value ? "Close the chat" : "Open the chat");
      button.textContent = value ? "×" : "Chat";
      if (value) {
        if (!frame) createFrame();
        focusChat();
      }
    }

    button.addEventListener("click", function () {
      setOpen(!open);
      if (!open) button.focus();
    });

    window.addEventListener("message", function (event) {
      if (!frame || event.origin !== lunogen || event.source !== frame.contentWindow) return;
      var data = event.data;
      if (!data || data.lunogen !== "chat") return;
      if (data.type === "ready") {
        ready = true;
        notice.hidden = true;
        frame.hidden = false;
        css(frame, { display: "block" });
        if (open) focusChat();
      } else if (data.type === "close" && open) {
        setOpen(false);
        button.focus();
      }
    });

    panel.appendChild(notice);
    root.appendChild(panel);
    root.appendChild(button);
    document.body.appendChild(host);
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
