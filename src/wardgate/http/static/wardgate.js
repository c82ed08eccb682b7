// wardgate pages: asks for confirmation before destructive form submissions, shows passwords on
// request, checks that a repeated new password matches, and shows times in the reader's own time
// zone (passkeys.js, on the pages that offer passkeys, runs their ceremonies).
"use strict";
document.addEventListener("submit", (event) => {
  const button = event.submitter;
  const question = button && button.dataset ? button.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// "Show password": a checkbox that turns the listed password fields into text fields and back.
for (const label of document.querySelectorAll("[data-reveal]")) {
  const box = label.querySelector("input[type=checkbox]");
  const fields = label.dataset.reveal.split(" ").map((id) => document.getElementById(id)).filter(Boolean);
  box.addEventListener("change", () => {
    for (const field of fields) {
      field.type = box.checked ? "text" : "password";
    }
  });
  label.hidden = false;
}

// "New password again": the browser refuses the form until both are the same, and says so.
for (const again of document.querySelectorAll("[data-same-as]")) {
  const first = document.getElementById(again.dataset.sameAs);
  const check = () => {
    again.setCustomValidity(first && again.value && again.value !== first.value ? "The two passwords are not the same." : "");
  };
  again.addEventListener("input", check);
  if (first) first.addEventListener("input", check);
}

// Times: the server writes UTC; the reader sees their own time zone.
const times = document.querySelectorAll("time[datetime]");
if (times.length) {
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  for (const time of times) {
    const when = new Date(time.dateTime);
    if (!Number.isNaN(when.getTime()) && when.getTime() > 0) {
      time.textContent = format.format(when);
    }
  }
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  for (const note of document.querySelectorAll("[data-local-times]")) {
    note.textContent = `Times are in your time zone (${zone}).`;
  }
}

// After a change: focus moves to what it did, next to the row it was made on. These pages come back
// to the row by its #fragment, which rules out `autofocus` and, once loaded, moves focus itself:
// so this runs after that.
const done = document.querySelector("[data-focus]");
if (done) {
  window.addEventListener("load", () => setTimeout(() => done.focus(), 0));
}
