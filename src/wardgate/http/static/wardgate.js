// wardgate pages: asks for confirmation before destructive form submissions (passkeys.js, on the
// pages that offer passkeys, runs their ceremonies).
"use strict";
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  const question = button && button.dataset ? button.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
