//! HubSpot CRM v3 (objects, search, batch) and v4 (associations) wire types, as serde structs.
//!
//! Everything HubSpot sends is parsed leniently: every field that the docs do not promise is
//! optional, unknown fields are kept in `extra` (so a read-modify-write drops nothing), and every
//! property value is a string or null. Must not: do I/O or decide anything about sync.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::webhook::ObjectType;

/// HubSpot's property bag: every value is a string (numbers, dates, booleans, multi-selects
/// `;`-separated) or null.
pub type Properties = BTreeMap<String, Option<String>>;

/// At most this many inputs per batch call [reported].
pub const MAX_BATCH_INPUTS: usize = 100;
/// At most this many results per search page [doc].
pub const MAX_SEARCH_LIMIT: u32 = 200;
/// Search never pages past this many results (a request past it gets a 400) [doc].
pub const SEARCH_RESULT_CAP: u64 = 10_000;
/// At most this many results per list page.
pub const MAX_LIST_LIMIT: u32 = 100;

impl ObjectType {
    /// The path segment of the v3/v4 endpoints: `contacts`, `companies`, `deals`.
    pub fn path(self) -> &'static str {
        match self {
            ObjectType::Contact => "contacts",
            ObjectType::Company => "companies",
            ObjectType::Deal => "deals",
        }
    }

    /// The object's last-modified property: `lastmodifieddate` for contacts,
    /// `hs_lastmodifieddate` for companies and deals.
    pub fn last_modified_property(self) -> &'static str {
        match self {
            ObjectType::Contact => "lastmodifieddate",
            ObjectType::Company | ObjectType::Deal => "hs_lastmodifieddate",
        }
    }

    /// The object type id of generic `object.*` webhooks (`0-1`, `0-2`, `0-3`).
    pub fn type_id(self) -> &'static str {
        match self {
            ObjectType::Contact => "0-1",
            ObjectType::Company => "0-2",
            ObjectType::Deal => "0-3",
        }
    }

    /// The inverse of [`ObjectType::path`].
    pub fn from_path(path: &str) -> Option<Self> {
        match path {
            "contacts" | "contact" | "0-1" => Some(ObjectType::Contact),
            "companies" | "company" | "0-2" => Some(ObjectType::Company),
            "deals" | "deal" | "0-3" => Some(ObjectType::Deal),
            _ => None,
        }
    }
}

/// A CRM object (`SimplePublicObject` / `SimplePublicObjectWithAssociations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmObject {
    pub id: String,
    #[serde(default)]
    pub properties: Properties,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
    /// Present in batch results of newer API versions: the input's trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_write_trace_id: Option<String>,
    /// v3 read with `associations=...`: `{"companies": {"results": [{"id", "type"}]}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associations: Option<BTreeMap<String, AssociationList>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties_with_history: Option<Value>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl CrmObject {
    /// A property's value; None when absent or null.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).and_then(|v| v.as_deref())
    }

    /// `hs_object_id` when present, else `id`: a GET of a merged-away id answers with the
    /// survivor, whose `hs_object_id` differs from the requested id.
    pub fn object_id(&self) -> &str {
        self.property("hs_object_id").unwrap_or(&self.id)
    }

    /// The ids merged into this object (`hs_merged_object_ids`, `;`-separated).
    pub fn merged_object_ids(&self) -> Vec<String> {
        split_multi(self.property("hs_merged_object_ids"))
    }
}

/// A `;`-separated multi-value property as its trimmed, non-empty parts.
pub fn split_multi(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One page of v3 associations embedded in an object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssociationList {
    #[serde(default)]
    pub results: Vec<AssociatedId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// `{"id": "123", "type": "contact_to_company"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssociatedId {
    pub id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub association_type: Option<String>,
}

/// `paging` of a list or search page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Paging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextPage>,
}

/// `paging.next`: `after` is the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextPage {
    pub after: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// The cursor of the page after `paging`, if any.
pub fn next_after(paging: &Option<Paging>) -> Option<String> {
    paging
        .as_ref()
        .and_then(|p| p.next.as_ref())
        .map(|n| n.after.clone())
}

/// `GET /crm/v3/objects/{o}` page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListPage {
    #[serde(default)]
    pub results: Vec<CrmObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// Search filter operators [doc].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operator {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Between,
    In,
    NotIn,
    HasProperty,
    NotHasProperty,
    ContainsToken,
    NotContainsToken,
}

/// One search filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    pub property_name: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

impl Filter {
    pub fn new(property: &str, operator: Operator, value: impl Into<String>) -> Self {
        Filter {
            property_name: property.to_owned(),
            operator,
            value: Some(value.into()),
            high_value: None,
            values: None,
        }
    }
}

/// Filters ANDed together; groups are ORed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FilterGroup {
    #[serde(default)]
    pub filters: Vec<Filter>,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Direction {
    Ascending,
    Descending,
}

/// One sort rule (HubSpot applies one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sort {
    pub property_name: String,
    pub direction: Direction,
}

/// `POST /crm/v3/objects/{o}/search` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    #[serde(default)]
    pub filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    pub sorts: Vec<Sort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
    /// At most [`MAX_SEARCH_LIMIT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// Search response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub results: Vec<CrmObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// `{"inputs": [...]}` of every batch call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchInput<T> {
    pub inputs: Vec<T>,
}

/// Properties sent on create/update: strings only (`""` clears a value).
pub type WriteProperties = BTreeMap<String, String>;

/// One batch (or single) create input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateInput {
    pub properties: WriteProperties,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub associations: Vec<AssociationSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_write_trace_id: Option<String>,
}

/// One batch update input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateInput {
    pub id: String,
    pub properties: WriteProperties,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_write_trace_id: Option<String>,
}

/// A single-object PATCH body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PatchBody {
    pub properties: WriteProperties,
}

/// `{"id": "..."}` (batch read / archive inputs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdInput {
    pub id: String,
}

/// `POST .../batch/read` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReadInput {
    #[serde(default)]
    pub properties: Vec<String>,
    pub inputs: Vec<IdInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_property: Option<String>,
}

/// `POST .../merge` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeInput {
    pub primary_object_id: String,
    pub object_id_to_merge: String,
}

/// Batch status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BatchStatus {
    Pending,
    Processing,
    Canceled,
    Complete,
    #[serde(other)]
    Unknown,
}

/// Batch result envelope (200/201 complete, 207 with `errors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult {
    #[serde(default = "unknown_status")]
    pub status: BatchStatus,
    #[serde(default)]
    pub results: Vec<CrmObject>,
    #[serde(default)]
    pub errors: Vec<ErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Value>,
}

fn unknown_status() -> BatchStatus {
    BatchStatus::Unknown
}

/// HubSpot's error body; also one entry of a batch's `errors`. Every field is optional [doc].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// A string in most answers, an object in some (kept as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_category: Option<Value>,
    /// `{"objectWriteTraceId": ["..."], "id": ["..."]}` and the like; other shapes kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Value>,
    /// 429 bodies: `TEN_SECONDLY_ROLLING` or `DAILY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    /// Some 429 bodies carry the policy here (`RATE_LIMIT`), others the policy name itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ErrorBody {
    /// Parses an error body; a body that is not JSON becomes a message-only error.
    pub fn parse(bytes: &[u8]) -> ErrorBody {
        serde_json::from_slice(bytes).unwrap_or_else(|_| ErrorBody {
            message: Some(String::from_utf8_lossy(bytes).chars().take(512).collect()),
            ..ErrorBody::default()
        })
    }

    /// The strings under `context[key]` (a list of strings, or one string).
    pub fn context_values(&self, key: &str) -> Vec<String> {
        match self.context.as_ref().and_then(|c| c.get(key)) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }

    /// The `objectWriteTraceId`s this error is about.
    pub fn trace_ids(&self) -> Vec<String> {
        self.context_values("objectWriteTraceId")
    }

    /// The existing object's id of a 409 "Contact already exists. Existing ID: N" [reported].
    pub fn existing_id(&self) -> Option<String> {
        let message = self.message.as_deref()?;
        let (_, rest) = message.split_once("Existing ID:")?;
        let id: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (!id.is_empty()).then_some(id)
    }

    /// The rate-limit policy of a 429 body.
    pub fn rate_limit_policy(&self) -> RateLimitPolicy {
        let name = self
            .policy_name
            .as_deref()
            .or(self.error_type.as_deref())
            .unwrap_or("");
        match name {
            "TEN_SECONDLY_ROLLING" | "SECONDLY" => RateLimitPolicy::TenSecondlyRolling,
            "DAILY" => RateLimitPolicy::Daily,
            _ => RateLimitPolicy::Unknown,
        }
    }

    /// A short, log-safe description (message, category, correlation id).
    pub fn summary(&self) -> String {
        let mut out = self
            .message
            .clone()
            .unwrap_or_else(|| "(no message)".into());
        if let Some(c) = &self.category {
            out.push_str(&format!(" [{c}]"));
        }
        if let Some(id) = &self.correlation_id {
            out.push_str(&format!(" (correlationId {id})"));
        }
        out
    }
}

/// `policyName` of a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitPolicy {
    /// The rolling burst limit (per 10 s; search has its own 5 req/s): back off briefly.
    TenSecondlyRolling,
    /// The daily cap: never retry before the reset.
    Daily,
    /// No or an unknown policy name: treated like the burst limit.
    Unknown,
}

// ---------------------------------------------------------------------------------------------
// Associations
// ---------------------------------------------------------------------------------------------

/// Who defined an association type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssociationCategory {
    HubspotDefined,
    UserDefined,
    IntegratorDefined,
}

/// `{associationCategory, associationTypeId}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationType {
    pub association_category: AssociationCategory,
    pub association_type_id: u32,
}

impl AssociationType {
    pub fn hubspot(id: u32) -> Self {
        AssociationType {
            association_category: AssociationCategory::HubspotDefined,
            association_type_id: id,
        }
    }
}

/// HubSpot-defined association type ids [reported, widely used].
pub mod association_type_ids {
    pub const CONTACT_TO_COMPANY_PRIMARY: u32 = 1;
    pub const CONTACT_TO_COMPANY: u32 = 279;
    pub const COMPANY_TO_CONTACT_PRIMARY: u32 = 2;
    pub const COMPANY_TO_CONTACT: u32 = 280;
    pub const DEAL_TO_CONTACT: u32 = 3;
    pub const CONTACT_TO_DEAL: u32 = 4;
    pub const DEAL_TO_COMPANY_PRIMARY: u32 = 5;
    pub const DEAL_TO_COMPANY: u32 = 341;
    pub const COMPANY_TO_DEAL_PRIMARY: u32 = 6;
    pub const COMPANY_TO_DEAL: u32 = 342;
}

/// The HubSpot-defined type of an association from `from` to `to` (primary or unlabeled).
pub fn association_type_id(from: ObjectType, to: ObjectType, primary: bool) -> Option<u32> {
    use ObjectType::*;
    use association_type_ids::*;
    Some(match (from, to, primary) {
        (Contact, Company, true) => CONTACT_TO_COMPANY_PRIMARY,
        (Contact, Company, false) => CONTACT_TO_COMPANY,
        (Company, Contact, true) => COMPANY_TO_CONTACT_PRIMARY,
        (Company, Contact, false) => COMPANY_TO_CONTACT,
        (Deal, Contact, _) => DEAL_TO_CONTACT,
        (Contact, Deal, _) => CONTACT_TO_DEAL,
        (Deal, Company, true) => DEAL_TO_COMPANY_PRIMARY,
        (Deal, Company, false) => DEAL_TO_COMPANY,
        (Company, Deal, true) => COMPANY_TO_DEAL_PRIMARY,
        (Company, Deal, false) => COMPANY_TO_DEAL,
        _ => return None,
    })
}

/// An association on a create input: `{"to": {"id"}, "types": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssociationSpec {
    pub to: IdInput,
    pub types: Vec<AssociationType>,
}

/// One v4 batch association input: `{"from": {"id"}, "to": {"id"}, "types": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssociationInput {
    pub from: IdInput,
    pub to: IdInput,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<AssociationType>,
}

/// One type of a v4 association read: `{"category", "typeId", "label"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationTypeRead {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One associated object of a v4 read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationTarget {
    pub to_object_id: crate::hubspot::webhook::HubSpotId,
    #[serde(default)]
    pub association_types: Vec<AssociationTypeRead>,
}

/// `GET /crm/v4/objects/{from}/{id}/associations/{to}` page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssociationPage {
    #[serde(default)]
    pub results: Vec<AssociationTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_parse_with_nulls_and_unknown_fields() {
        let body = r#"{"id":"512","properties":{"email":"a@b.c","phone":null,
            "lastmodifieddate":"2026-11-19T10:00:00.123Z","hs_merged_object_ids":"7;9"},
            "createdAt":"2026-11-19T09:00:00Z","updatedAt":"2026-11-19T10:00:00Z",
            "archived":false,"url":"https://x"}"#;
        let o: CrmObject = serde_json::from_str(body).unwrap();
        assert_eq!(o.property("email"), Some("a@b.c"));
        assert_eq!(o.property("phone"), None);
        assert_eq!(o.object_id(), "512");
        assert_eq!(o.merged_object_ids(), vec!["7", "9"]);
        assert_eq!(o.extra.get("url"), Some(&Value::String("https://x".into())));
        let back = serde_json::to_value(&o).unwrap();
        assert_eq!(back["url"], "https://x");
    }

    #[test]
    fn search_request_shape() {
        let r = SearchRequest {
            filter_groups: vec![FilterGroup {
                filters: vec![Filter::new("lastmodifieddate", Operator::Gte, "1700")],
            }],
            sorts: vec![Sort {
                property_name: "lastmodifieddate".into(),
                direction: Direction::Ascending,
            }],
            properties: vec!["email".into()],
            limit: Some(200),
            after: Some("200".into()),
            query: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"filterGroups":[{"filters":[{"propertyName":"lastmodifieddate",
                "operator":"GTE","value":"1700"}]}],"sorts":[{"propertyName":"lastmodifieddate",
                "direction":"ASCENDING"}],"properties":["email"],"limit":200,"after":"200"})
        );
    }

    #[test]
    fn batch_207_errors_name_their_trace_ids() {
        let body = r#"{"status":"COMPLETE","results":[{"id":"1","properties":{},
            "objectWriteTraceId":"t1"}],"numErrors":1,"errors":[{"status":"error",
            "category":"VALIDATION_ERROR","message":"Property values were not valid",
            "context":{"objectWriteTraceId":["t2"]},"subCategory":{"x":1}}]}"#;
        let r: BatchResult = serde_json::from_str(body).unwrap();
        assert_eq!(r.status, BatchStatus::Complete);
        assert_eq!(r.results[0].object_write_trace_id.as_deref(), Some("t1"));
        assert_eq!(r.errors[0].trace_ids(), vec!["t2"]);
        // Every field optional.
        let e: ErrorBody = serde_json::from_str("{}").unwrap();
        assert_eq!(e.trace_ids(), Vec::<String>::new());
        assert_eq!(
            ErrorBody::parse(b"<html>").message.as_deref(),
            Some("<html>")
        );
    }

    #[test]
    fn conflict_and_rate_limit_bodies() {
        let e = ErrorBody::parse(
            br#"{"status":"error","message":"Contact already exists. Existing ID: 901","category":"CONFLICT"}"#,
        );
        assert_eq!(e.existing_id().as_deref(), Some("901"));
        let daily = ErrorBody::parse(br#"{"status":"error","policyName":"DAILY"}"#);
        assert_eq!(daily.rate_limit_policy(), RateLimitPolicy::Daily);
        let burst =
            ErrorBody::parse(br#"{"errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#);
        assert_eq!(
            burst.rate_limit_policy(),
            RateLimitPolicy::TenSecondlyRolling
        );
        assert_eq!(
            ErrorBody::default().rate_limit_policy(),
            RateLimitPolicy::Unknown
        );
    }

    #[test]
    fn association_type_ids_per_providers_md() {
        use ObjectType::*;
        assert_eq!(association_type_id(Contact, Company, true), Some(1));
        assert_eq!(association_type_id(Contact, Company, false), Some(279));
        assert_eq!(association_type_id(Deal, Contact, false), Some(3));
        assert_eq!(association_type_id(Deal, Company, false), Some(341));
        assert_eq!(association_type_id(Contact, Contact, false), None);
        let v = serde_json::to_value(AssociationType::hubspot(279)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"associationCategory":"HUBSPOT_DEFINED","associationTypeId":279})
        );
        let page: AssociationPage = serde_json::from_str(
            r#"{"results":[{"toObjectId":77,"associationTypes":[{"category":"HUBSPOT_DEFINED","typeId":1,"label":"Primary"}]}]}"#,
        )
        .unwrap();
        assert_eq!(page.results[0].to_object_id.0, "77");
    }
}
