// Flowline console: a little progressive enhancement. Every page works without it.
// An element with data-refresh="<url>" has its content replaced by that URL's HTML every
// data-every milliseconds (the live numbers), while the tab is visible.
(function () {
  "use strict";
  function refresh(element) {
    if (document.hidden) return;
    fetch(element.dataset.refresh, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (html) { if (html !== null) element.innerHTML = html; })
      .catch(function () { /* the next tick tries again */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(function (element) {
      var every = parseInt(element.dataset.every, 10) || 5000;
      window.setInterval(function () { refresh(element); }, every);
    });
  });
})();
