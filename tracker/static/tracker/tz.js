// Tell the server the browser's time zone (IANA name) so that pages show times in it.
// tracker/middleware.py reads the cookie and ignores a name it does not know.
(function () {
  "use strict";
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    return;
  }
  if (!zone || document.cookie.split("; ").indexOf("tz=" + zone) !== -1) {
    return;
  }
  var secure = location.protocol === "https:" ? "; secure" : "";
  document.cookie = "tz=" + zone + "; path=/; max-age=31536000; samesite=lax" + secure;
})();
