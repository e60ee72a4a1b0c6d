//! The gRPC listener: the API's services over the HTTP routers they mirror, reflection, health
//! and grpc-web.

use crate::codec::DynamicCodec;
use crate::routes::{Route, routes_of};
use crate::transcode;
use futures::{Stream, StreamExt};
use http_body_util::BodyExt;
use prost_reflect::DynamicMessage;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::{Grpc, ServerStreamingService, UnaryService};
use tonic::service::Routes;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tower::ServiceExt;
use tower_http::cors::CorsLayer;

/// Largest JSON answer a unary method reads from its route, in bytes.
const ANSWER_MAX: usize = 64 * 1024 * 1024;

/// One of the API's services, with the router (gate included) that serves its routes.
pub enum Api {
    /// `tally.v1.Commands`, over the front door's router.
    Commands(axum::Router),
    /// `tally.v1.Queries`, over the query API's router.
    Queries(axum::Router),
}

impl Api {
    fn name(&self) -> &'static str {
        match self {
            Api::Commands(_) => "tally.v1.Commands",
            Api::Queries(_) => "tally.v1.Queries",
        }
    }
}

/// A certificate chain and key (PEM) to serve over TLS.
pub struct Tls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// The gRPC listener, bound and not yet serving.
pub struct GrpcServer {
    listener: TcpListener,
    routes: Routes,
    tls: Option<Tls>,
    /// CORS for browsers on other origins (grpc-web); `None`: no CORS headers.
    cors: Option<CorsLayer>,
    /// Fired as the server begins to stop: open streams end then (UNAVAILABLE), so that the
    /// graceful stop, which waits for calls in flight, is not held by streams without an end.
    closing: CancellationToken,
}

impl GrpcServer {
    /// Binds `address` for `apis` (plus reflection, health and grpc-web), over TLS when `tls`
    /// is given, answering browsers' CORS requests with `cors` when given. Fails when the
    /// address cannot be bound.
    pub async fn bind(
        address: SocketAddr,
        apis: Vec<Api>,
        tls: Option<Tls>,
        cors: Option<CorsLayer>,
    ) -> std::io::Result<GrpcServer> {
        let listener = TcpListener::bind(address).await?;
        let closing = CancellationToken::new();
        Ok(GrpcServer { listener, routes: routes(apis, &closing), tls, cors, closing })
    }

    /// The address bound (the port the system chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; calls in flight then finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
        let closing = self.closing.clone();
        let shutdown = async move {
            shutdown.await;
            closing.cancel();
        };
        let mut server = tonic::transport::Server::builder().accept_http1(true);
        if let Some(tls) = self.tls {
            let identity = Identity::from_pem(tls.cert_pem, tls.key_pem);
            server =
                server.tls_config(ServerTlsConfig::new().identity(identity)).map_err(|e| e.to_string())?;
        }
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(self.listener);
        // CORS outside grpc-web: a preflight (OPTIONS) is answered before it reaches a method.
        let layers =
            tower::ServiceBuilder::new().option_layer(self.cors).layer(tonic_web::GrpcWebLayer::new());
        server
            .layer(layers)
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Every method of `apis`, reflection and health, as routes.
fn routes(apis: Vec<Api>, closing: &CancellationToken) -> Routes {
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut router = axum::Router::new();
    for api in apis {
        let name = api.name();
        let http = match api {
            Api::Commands(router) | Api::Queries(router) => router,
        };
        let methods = Methods { http, routes: Arc::new(routes_of(name)), closing: closing.clone() };
        for path in methods.routes.keys() {
            router = router.route_service(path, methods.clone());
        }
        // Serving once listening: whether the service is caught up is the HTTP `/ready`'s to say.
        let health = health.clone();
        tokio::spawn(
            async move { health.set_service_status(name, tonic_health::ServingStatus::Serving).await },
        );
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection().build_v1().expect("the descriptor sets the builds wrote");
    let v1alpha = reflection().build_v1alpha().expect("the descriptor sets the builds wrote");
    // A method no service has is a gRPC answer too (UNIMPLEMENTED), not a bare HTTP 404.
    let router = router
        .fallback(|| async { Status::unimplemented("no such method").into_http::<tonic::body::Body>() });
    Routes::from(router).add_service(health_service).add_service(v1).add_service(v1alpha)
}

/// The methods of one service, each answered by its route on `http`.
#[derive(Clone)]
struct Methods {
    http: axum::Router,
    routes: Arc<HashMap<String, Arc<Route>>>,
    closing: CancellationToken,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<axum::body::Body>> for Methods {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<axum::body::Body>) -> Self::Future {
        let route = self.routes.get(request.uri().path()).cloned();
        let (http, closing) = (self.http.clone(), self.closing.clone());
        Box::pin(async move {
            let Some(route) = route else {
                return Ok(Status::unimplemented("no such method").into_http());
            };
            let mut grpc = Grpc::new(DynamicCodec::new(route.input()));
            let call = Call { route: route.clone(), http, closing };
            Ok(match route.method.is_server_streaming() {
                true => grpc.server_streaming(call, request).await,
                false => grpc.unary(call, request).await,
            })
        })
    }
}

/// One method's call: its route, on the router that serves it.
#[derive(Clone)]
struct Call {
    route: Arc<Route>,
    http: axum::Router,
    closing: CancellationToken,
}

impl Call {
    /// Calls the route with `request`; returns a successful answer (status, headers, body), or
    /// the status a refusal maps to.
    async fn http(
        &self,
        request: Request<DynamicMessage>,
    ) -> Result<http::Response<axum::body::Body>, Status> {
        let made = transcode::request(&self.route, request.get_ref(), request.metadata())?;
        let answer = self.http.clone().oneshot(made.request).await;
        let answer = answer.unwrap_or_else(|never| match never {});
        if answer.status().is_success() {
            return Ok(answer);
        }
        let status = answer.status().as_u16();
        if let (404, Some(field)) = (status, made.missing) {
            let problem =
                serde_json::json!({"title": "invalid request", "detail": format!("{field}: required")});
            return Err(crate::status::of_answer(400, problem.to_string().as_bytes(), answer.headers()));
        }
        let headers = answer.headers().clone();
        let body = read(answer.into_body()).await?;
        Err(crate::status::of_answer(status, &body, &headers))
    }
}

async fn read(body: axum::body::Body) -> Result<bytes::Bytes, Status> {
    let limited = http_body_util::Limited::new(body, ANSWER_MAX);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(Status::internal(format!("reading the answer: {e}"))),
    }
}

impl UnaryService<DynamicMessage> for Call {
    type Response = DynamicMessage;
    type Future = BoxFuture<Result<Response<DynamicMessage>, Status>>;

    fn call(&mut self, request: Request<DynamicMessage>) -> Self::Future {
        let call = self.clone();
        Box::pin(async move {
            let answer = call.http(request).await?;
            let metadata = transcode::answer_metadata(answer.headers());
            let body = read(answer.into_body()).await?;
            let message = transcode::message(&call.route.method.output(), &body)?;
            let mut response = Response::new(message);
            *response.metadata_mut() = metadata;
            Ok(response)
        })
    }
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<DynamicMessage, Status>> + Send>>;

impl ServerStreamingService<DynamicMessage> for Call {
    type Response = DynamicMessage;
    type ResponseStream = MessageStream;
    type Future = BoxFuture<Result<Response<MessageStream>, Status>>;

    /// The route's Server-Sent Events, one message each (an event's `data` is the message's
    /// JSON). The stream ends when the route's does; the client resumes from the last one.
    fn call(&mut self, request: Request<DynamicMessage>) -> Self::Future {
        let call = self.clone();
        Box::pin(async move {
            let answer = call.http(request).await?;
            let metadata = transcode::answer_metadata(answer.headers());
            let output = call.route.method.output();
            let events = eventsource_stream::EventStream::new(answer.into_body().into_data_stream());
            let messages = events.map(move |event| match event {
                Ok(event) => transcode::message(&output, event.data.as_bytes()),
                Err(e) => Err(Status::unavailable(format!("the event stream broke: {e}"))),
            });
            // A followed stream has no end of its own: when the route's ends (a failed read, a
            // credential revoked), the call ends UNAVAILABLE, and the client resumes (and is
            // told then if it may not).
            let ended = futures::stream::once(async {
                Err(Status::unavailable("the event stream ended; resume after the last event"))
            });
            let messages = messages.take_until(call.closing.clone().cancelled_owned()).chain(ended);
            let mut response = Response::new(Box::pin(messages) as MessageStream);
            *response.metadata_mut() = metadata;
            Ok(response)
        })
    }
}

impl GrpcServer {
    /// Serves until `cancel` fires (then calls in flight finish) as a service named `grpc`; a
    /// server that ends otherwise ends its handle with the error.
    pub fn run(self, cancel: tokio_util::sync::CancellationToken) -> tally_runtime::Handle {
        tally_runtime::Handle::spawn("grpc", cancel.clone(), (), self.serve(cancel.cancelled_owned()))
    }
}
