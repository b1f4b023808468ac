// The "Copy" button beside a secret shown once: [data-copy] names the field it copies.
// Without this script (or without the clipboard API) the button stays hidden and the field can
// be selected and copied by hand.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (!navigator.clipboard) return;
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const id = button.getAttribute("data-copy");
    const field = document.getElementById(id);
    const status = document.querySelector(`[data-copied-for="${id}"]`);
    if (!field) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(field.value);
        if (status) status.textContent = "Copied to the clipboard.";
      } catch {
        field.select();
        if (status) status.textContent = "Copying was refused: the key is selected, press Ctrl+C.";
      }
    });
  }
});
