// Starts Swagger UI on the API's own schema; served from this host (lockd/api/api_docs.py says why).
"use strict";
window.addEventListener("load", function () {
  window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
});
