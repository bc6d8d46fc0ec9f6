// The console's own script: no inline handlers anywhere (the CSP forbids them), so behaviour hangs on data-*
// attributes here. Loaded with defer on every page, after htmx.
(function () {
  "use strict";

  // <form data-confirm="text">: ask before sending (revoking a key, disabling a user).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // <button data-copy="id">: copy the text of element #id (a key or password shown once).
  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.classList.add("copied");
      }, function () { /* the text stays selectable */ });
    }
  });

  // A fragment that htmx polls says when to stop: the server answers 286 for a final state, or an element with
  // data-final; nothing to do here but keep htmx's defaults.
})();
