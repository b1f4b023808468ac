// The runtime log page: follow new lines live (EventSource, resumed by the browser after
// Last-Event-ID), filter them as the page is filtered, pause and resume.
// CSP-clean: no inline code, no eval, text only (never innerHTML).
(function () {
  "use strict";

  var list = document.getElementById("log-lines");
  if (!list || !window.EventSource) return;
  var empty = document.getElementById("log-empty");
  var pause = document.getElementById("log-pause");
  var live = document.getElementById("log-live");
  var levels = (list.dataset.levels || "").split(" ");
  var minLevel = list.dataset.level || "";
  var kind = list.dataset.kind || "";
  var MAX_SHOWN = 1000;
  var MAX_HELD = 5000;
  var paused = false;
  var held = [];
  var heldCount = 0;
  var newest = 0;

  Array.prototype.forEach.call(list.children, function (item) {
    newest = Math.max(newest, Number(item.dataset.id) || 0);
  });

  function passes(line) {
    if (minLevel && levels.indexOf(line.level) < levels.indexOf(minLevel)) return false;
    return !kind || line.event === kind;
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function render(line) {
    var item = element("li", "log-line is-new level-" + line.level);
    item.dataset.id = String(line.id);
    var stamp = String(line.created_at || "").replace("T", " ").slice(0, 19);
    var time = element("time", "", stamp);
    time.setAttribute("datetime", stamp.replace(" ", "T") + "Z");
    item.appendChild(time);
    item.appendChild(element("span", "log-level", line.level));
    item.appendChild(element("code", "log-kind", line.event));
    item.appendChild(element("span", "log-message", line.message));
    var details = line.details || {};
    if (Object.keys(details).length) {
      var box = element("details");
      box.appendChild(element("summary", "", "Details"));
      box.appendChild(element("pre", "", JSON.stringify(sorted(details), null, 2)));
      item.appendChild(box);
    }
    return item;
  }

  function sorted(value) {
    if (!value || typeof value !== "object" || Array.isArray(value)) return value;
    var copy = {};
    Object.keys(value).sort().forEach(function (key) {
      copy[key] = sorted(value[key]);
    });
    return copy;
  }

  function show(line) {
    list.appendChild(render(line));
    while (list.children.length > MAX_SHOWN) list.removeChild(list.firstElementChild);
    empty.hidden = true;
  }

  function label() {
    if (!paused) {
      pause.textContent = "Pause";
      return;
    }
    pause.textContent = heldCount ? "Resume (" + heldCount + " new)" : "Resume";
  }

  function setLive(text) {
    if (live.textContent !== text) live.textContent = text;
  }

  pause.hidden = false;
  pause.addEventListener("click", function () {
    paused = !paused;
    pause.setAttribute("aria-pressed", paused ? "true" : "false");
    if (!paused) {
      held.forEach(show);
      if (heldCount > held.length) {
        setLive("Live. " + (heldCount - held.length) + " older held lines were left out: reload to see them.");
      } else {
        setLive(heldCount ? "Live: " + heldCount + " held lines shown." : "Live");
      }
      held = [];
      heldCount = 0;
    } else {
      setLive("Paused: new lines are held until you resume.");
    }
    label();
  });

  var source = new EventSource(list.dataset.stream);
  source.addEventListener("open", function () {
    setLive(paused ? "Paused: new lines are held until you resume." : "Live");
  });
  source.addEventListener("error", function () {
    setLive(
      source.readyState === EventSource.CLOSED
        ? "Disconnected: reload the page to follow the log again."
        : "Reconnecting…"
    );
  });
  source.addEventListener("log", function (event) {
    var line;
    try {
      line = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    if (!line || typeof line.id !== "number" || line.id <= newest) return;
    newest = line.id;
    if (!passes(line)) return;
    if (paused) {
      heldCount += 1;
      held.push(line);
      if (held.length > MAX_HELD) held.shift();
      label();
      return;
    }
    show(line);
  });
  window.addEventListener("pagehide", function () {
    source.close();
  });
})();
