// The Agents pages' small helpers (no inline script: the CSP forbids it).
// - a textarea with data-count="<output id>" keeps its character count up to date;
// - a button with data-copy="<element id>" copies that element's text to the clipboard.
(function () {
  "use strict";
  function count(area) {
    var out = document.getElementById(area.getAttribute("data-count"));
    if (!out) { return; }
    var max = area.getAttribute("maxlength");
    // characters as the API counts them (code points, not UTF-16 units)
    out.textContent = Array.from(area.value).length.toLocaleString("en") + " of " +
      Number(max).toLocaleString("en") + " characters";
  }
  function copy(button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) { return; }
    navigator.clipboard.writeText(source.textContent).then(function () {
      button.textContent = "Copied";
    }, function () {
      button.textContent = "Select and copy";
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("textarea[data-count]").forEach(function (area) {
      area.addEventListener("input", function () { count(area); });
    });
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () { copy(button); });
    });
  });
})();
