/* Staff pages: remember the browser's time zone in the dsr_tz cookie, so the server shows times in it
   (gdpr_requests/staff/timezones.py). Served from the app (CSP script-src 'self'); no inline script. */
(function () {
  "use strict";
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    return;
  }
  if (!zone || !/^[A-Za-z0-9_+\-\/]{1,64}$/.test(zone)) return;
  var current = document.cookie.split("; ").filter(function (c) { return c.indexOf("dsr_tz=") === 0; })[0];
  if (current === "dsr_tz=" + zone) return;
  var secure = window.location.protocol === "https:" ? "; Secure" : "";
  document.cookie = "dsr_tz=" + zone + "; Path=/; Max-Age=31536000; SameSite=Lax" + secure;
  // The page just drawn used another zone: one reload shows it in this one (never loops: the cookie now matches,
  // so the next load returns above).
  var shown = document.querySelector('meta[name="dsr-tz"]');
  if (shown && shown.getAttribute("content") !== zone) window.location.reload();
})();
