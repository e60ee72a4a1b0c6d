//! Who is calling, and what they may do. Pure rules over plain data, plus the files and URLs
//! they are loaded from; the HTTP services apply them through `tally_http::gate`.
//!
//! - A caller presents a bearer token: an API key ([`keys`]) or a JWT checked against a JWKS
//!   ([`jwt`]). Either names exactly one tenant, a subject (recorded as the actor of every
//!   event the caller causes) and roles.
//! - Roles: `read` (queries), `write` (commands), `admin` (projection rebuilds and other
//!   operator routes). Each action needs its role.
//! - An optional Rego policy ([`policy`]) is asked next, per request, with the subject, tenant,
//!   roles, action and resource; when one is configured, whatever it does not allow is denied.
//!   A policy can only take away what the roles give.
//! - Keys, JWKS and policy reload without a restart ([`reload`]).

pub mod jwt;
pub mod keys;
pub mod policy;
pub mod producers;
pub mod reload;

use std::sync::Arc;
use tally_core::{Actor, TenantId};

/// What a caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May read: `GET` and `HEAD` requests outside `/admin/` (queries).
    Read,
    /// May send commands: every other method outside `/admin/`.
    Write,
    /// May use the operator routes under `/admin/` (projection rebuilds and the like).
    Admin,
}

impl Role {
    const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Admin];

    /// The role's name in keys files, JWT role claims and policies: `read`, `write` or `admin`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    /// The role named `name` (exactly, lower case); an error naming the three roles otherwise.
    pub fn parse(name: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| format!("unknown role {name:?}; roles are read, write and admin"))
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// The set of `roles` (repeats count once).
    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |bits, r| bits | r.bit()))
    }

    /// The set of the roles named; fails on the first unknown name, as [`Role::parse`].
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Roles, String> {
        let roles: Result<Vec<Role>, String> = names.iter().map(|n| Role::parse(n.as_ref())).collect();
        Ok(Roles::of(&roles?))
    }

    /// Whether `role` is in the set.
    pub fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// The names of the roles in the set, in the order read, write, admin.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Role::ALL.into_iter().filter(move |r| self.has(*r)).map(Role::name)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The only tenant whose data the caller sees or changes.
    pub tenant: TenantId,
    /// Who: `key:<id>` for an API key, the token's `sub` for a JWT. Recorded in events.
    pub subject: Actor,
    /// What the caller may do; each [`Action`] needs its [`Role`].
    pub roles: Roles,
    /// What the per-caller rate limit counts against.
    pub limit_key: String,
}

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A `GET` or `HEAD` request outside `/admin/`; needs [`Role::Read`].
    Read,
    /// Any other method outside `/admin/` (a command); needs [`Role::Write`].
    Write,
    /// Any request under `/admin/`; needs [`Role::Admin`].
    Admin,
}

impl Action {
    /// The role the action needs.
    pub fn role(self) -> Role {
        match self {
            Action::Read => Role::Read,
            Action::Write => Role::Write,
            Action::Admin => Role::Admin,
        }
    }
}

/// A request as the authorization sees it.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// What the request asks to do, from its method and path.
    pub action: Action,
    /// The HTTP method, as sent (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The request's path (the resource), percent-decoded: as the routes read it, so that
    /// `/v1/state/%70ayroll` is `/v1/state/payroll` to a policy too.
    pub path: &'a str,
    /// The request's query string as sent (`application/x-www-form-urlencoded`; empty if none).
    pub query: &'a str,
}

/// Why a caller was not let through. The HTTP gate answers [`AuthError::Missing`] and
/// [`AuthError::Invalid`] with 401 and a `WWW-Authenticate: Bearer` challenge (RFC 6750), and
/// [`AuthError::Forbidden`] with 403, each as a problem document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials: the request has no `Authorization` header.
    #[error("credentials are required: send `Authorization: Bearer <API key or JWT>`")]
    Missing,
    /// Credentials that do not authenticate (not `Bearer <token>`, an unknown key, a bad or
    /// expired JWT, a kind of token not accepted here); the reason, safe to show the caller.
    #[error("the credentials were refused: {0}")]
    Invalid(String),
    /// An authenticated caller without the role the action needs, or denied by the policy.
    #[error("{0}")]
    Forbidden(String),
}

impl AuthError {
    fn invalid(why: impl Into<String>) -> AuthError {
        AuthError::Invalid(why.into())
    }
}

/// Every way a caller may be recognised and checked; cheap to clone.
#[derive(Clone, Default)]
pub struct Authenticator {
    keys: Option<Arc<reload::Reloading<keys::KeyRing>>>,
    jwt: Option<Arc<jwt::JwtVerifier>>,
    policy: Option<Arc<reload::Reloading<policy::Policy>>>,
}

impl Authenticator {
    /// An authenticator that accepts nothing until keys or a JWT verifier are added.
    pub fn new() -> Authenticator {
        Authenticator::default()
    }

    /// Accepts API keys (tokens starting with [`keys::SECRET_PREFIX`]) from `keys`.
    pub fn with_keys(mut self, keys: Arc<reload::Reloading<keys::KeyRing>>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Accepts JWTs (every token that is not an API key), checked by `jwt`.
    pub fn with_jwt(mut self, jwt: Arc<jwt::JwtVerifier>) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// Asks `policy` after the role check; what it does not allow is [`AuthError::Forbidden`].
    pub fn with_policy(mut self, policy: Arc<reload::Reloading<policy::Policy>>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The caller a bearer token names.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Arc<Principal>, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        if token.starts_with(keys::SECRET_PREFIX) {
            let keys =
                self.keys.as_ref().ok_or_else(|| AuthError::invalid("API keys are not accepted here"))?;
            return keys.current().verify(token);
        }
        let jwt = self.jwt.as_ref().ok_or_else(|| {
            AuthError::invalid(format!(
                "not an API key (they start with {}), and JWTs are not accepted here",
                keys::SECRET_PREFIX
            ))
        })?;
        jwt.verify(token)
    }

    /// Whether `who` may do `access`: the role first, then the policy when there is one.
    pub fn authorize(&self, who: &Principal, access: Access<'_>) -> Result<(), AuthError> {
        let role = access.action.role();
        if !who.roles.has(role) {
            return Err(AuthError::Forbidden(format!("this needs the {} role", role.name())));
        }
        match &self.policy {
            Some(policy) if !policy.current().allows(who, access) => {
                Err(AuthError::Forbidden("the authorization policy does not allow this".into()))
            }
            _ => Ok(()),
        }
    }

    /// Whether the policy judges the answers to reads ([`policy::Policy::judge_response`]).
    pub fn judges_responses(&self) -> bool {
        self.policy.as_ref().is_some_and(|policy| policy.current().judges_responses())
    }

    /// What the policy says of `answer` (JSON text), a read's answer to `who`'s `access`:
    /// [`policy::ResponseVerdict::Pass`] without a policy or its response rule.
    pub fn judge_response(
        &self,
        who: &Principal,
        access: Access<'_>,
        answer: &str,
    ) -> policy::ResponseVerdict {
        match &self.policy {
            Some(policy) => policy.current().judge_response(who, access, answer),
            None => policy::ResponseVerdict::Pass,
        }
    }
}
