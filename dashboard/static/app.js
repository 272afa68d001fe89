// The overview refreshes its live part in place: the server renders it (escaped by
// html/template), this swaps it in. Nothing else on the pages needs JavaScript.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) {
    return;
  }
  var every = parseInt(live.getAttribute("data-refresh"), 10) || 5000;
  function refresh() {
    fetch(live.getAttribute("data-src"), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        live.classList.remove("offline");
        live.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {
        live.classList.add("offline");
      })
      .then(function () {
        setTimeout(refresh, every);
      });
  }
  setTimeout(refresh, every);
})();
