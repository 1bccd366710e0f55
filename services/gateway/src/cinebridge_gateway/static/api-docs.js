// Starts Swagger UI on /api/v1/docs (a file, not an inline script: the CSP allows only 'self').
window.ui = SwaggerUIBundle({ url: "/api/v1/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
