// notifier console: the live part of a page ([data-live]) is fetched again every few seconds
// and swapped in, so the overview and a partner's numbers stay current. Served from the
// console itself (no inline script, nothing from elsewhere); the pages read the same without it.
(function () {
  "use strict";
  var EVERY_MS = 3000;
  var live = document.querySelector("[data-live]");
  if (!live || !window.fetch || !window.DOMParser) {
    return;
  }
  var busy = false;
  var refreshes = 0;

  function swap(html) {
    // parsed into an inert document first: nothing in it runs or loads until it is moved in,
    // and the server escaped every third party's text already
    var parsed = new DOMParser().parseFromString(html, "text/html");
    live.replaceChildren.apply(live, Array.prototype.slice.call(parsed.body.childNodes));
    refreshes += 1;
    live.setAttribute("data-refreshes", String(refreshes));
    live.classList.remove("stale");
  }

  function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    fetch(window.location.href, {
      headers: { "X-Console-Live": "1" },
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (response) {
        if (response.redirected) {
          // the session ended: the page itself goes to the sign-in form
          window.location.reload();
          return null;
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        if (html !== null) {
          swap(html);
        }
      })
      .catch(function () {
        live.classList.add("stale");
      })
      .then(function () {
        busy = false;
      });
  }

  window.setInterval(refresh, EVERY_MS);
  document.addEventListener("visibilitychange", refresh);
})();
