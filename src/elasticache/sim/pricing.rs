//! The simulator's AWS Price List: `GetProducts` over a price table for the node families the
//! simulator offers, on the same endpoint, in the protocol `aws-sdk-pricing` speaks.
//!
//! The protocol, as the SDK (1.106) builds it: awsJson 1.1 — `POST /` with `X-Amz-Target:
//! AWSPriceListService.GetProducts` and a JSON body (`ServiceCode`, `Filters`,
//! `FormatVersion`, `NextToken`, `MaxResults`); the answer is `FormatVersion`, `PriceList`
//! (each product a JSON document *in a string*, shaped like AWS's: `product.attributes`,
//! `terms.OnDemand`, `terms.Reserved`) and `NextToken`. Errors are `{"__type", "message"}`.
//!
//! The table is AWS's us-east-1 on-demand list (Redis OSS) for the r7g, r6g, m7g, m6g, t4g,
//! t3, r5 and m5 families, scaled per region; Memcached lists the same prices and Valkey 20 %
//! less, so a filter on `cacheEngine` matters. Other families (data tiering, c7gn, old
//! generations) list no price, as a type a region doesn't offer. Every filter type is honoured
//! on any attribute (`TERM_MATCH`/`EQUALS`, `CONTAINS`, `ANY_OF`, `NONE_OF`).
//!
//! Faults, as for every other action: the world's throttle fraction, and
//! [`SimHandle::deny_action`](super::SimHandle::deny_action) /
//! [`SimHandle::throttle_action`](super::SimHandle::throttle_action) with `"GetProducts"`.

use serde_json::{Value, json};

/// The `X-Amz-Target` of GetProducts.
pub const TARGET: &str = "AWSPriceListService.GetProducts";
/// The only format there is.
const FORMAT_VERSION: &str = "aws_v1";
/// What AWS allows in one page (and its default).
const MAX_RESULTS: usize = 100;

/// On-demand USD per node-hour in us-east-1, Redis OSS.
const US_EAST_1: &[(&str, f64)] = &[
    ("cache.r7g.large", 0.219),
    ("cache.r7g.xlarge", 0.437),
    ("cache.r7g.2xlarge", 0.873),
    ("cache.r7g.4xlarge", 1.747),
    ("cache.r7g.8xlarge", 3.493),
    ("cache.r7g.12xlarge", 5.239),
    ("cache.r7g.16xlarge", 6.986),
    ("cache.r6g.large", 0.206),
    ("cache.r6g.xlarge", 0.411),
    ("cache.r6g.2xlarge", 0.821),
    ("cache.r6g.4xlarge", 1.642),
    ("cache.r6g.8xlarge", 3.284),
    ("cache.r6g.12xlarge", 4.926),
    ("cache.r6g.16xlarge", 6.568),
    ("cache.m7g.large", 0.158),
    ("cache.m7g.xlarge", 0.315),
    ("cache.m7g.2xlarge", 0.632),
    ("cache.m7g.4xlarge", 1.265),
    ("cache.m7g.8xlarge", 2.530),
    ("cache.m7g.12xlarge", 3.795),
    ("cache.m7g.16xlarge", 5.060),
    ("cache.m6g.large", 0.149),
    ("cache.m6g.xlarge", 0.298),
    ("cache.m6g.2xlarge", 0.596),
    ("cache.m6g.4xlarge", 1.192),
    ("cache.m6g.8xlarge", 2.384),
    ("cache.m6g.12xlarge", 3.576),
    ("cache.m6g.16xlarge", 4.768),
    ("cache.t4g.micro", 0.016),
    ("cache.t4g.small", 0.032),
    ("cache.t4g.medium", 0.065),
    ("cache.t3.micro", 0.017),
    ("cache.t3.small", 0.034),
    ("cache.t3.medium", 0.068),
    ("cache.r5.large", 0.216),
    ("cache.r5.xlarge", 0.431),
    ("cache.r5.2xlarge", 0.862),
    ("cache.r5.4xlarge", 1.724),
    ("cache.r5.12xlarge", 5.174),
    ("cache.r5.24xlarge", 10.349),
    ("cache.m5.large", 0.156),
    ("cache.m5.xlarge", 0.311),
    ("cache.m5.2xlarge", 0.623),
    ("cache.m5.4xlarge", 1.245),
    ("cache.m5.12xlarge", 3.744),
    ("cache.m5.24xlarge", 7.488),
];

/// The regions listed: code, location name, usage-type prefix, price relative to us-east-1.
const REGIONS: &[(&str, &str, &str, f64)] = &[
    ("us-east-1", "US East (N. Virginia)", "", 1.0),
    ("us-east-2", "US East (Ohio)", "USE2-", 1.0),
    ("us-west-1", "US West (N. California)", "USW1-", 1.17),
    ("us-west-2", "US West (Oregon)", "USW2-", 1.0),
    ("eu-west-1", "EU (Ireland)", "EUW1-", 1.11),
    ("eu-west-2", "EU (London)", "EUW2-", 1.16),
    ("eu-central-1", "EU (Frankfurt)", "EUC1-", 1.2),
    ("ap-south-1", "Asia Pacific (Mumbai)", "APS3-", 1.08),
    ("ap-southeast-1", "Asia Pacific (Singapore)", "APS1-", 1.22),
    ("ap-northeast-1", "Asia Pacific (Tokyo)", "APN1-", 1.27),
];

/// The engines listed, with their price relative to Redis OSS.
const ENGINES: &[(&str, f64)] = &[("Redis", 1.0), ("Memcached", 1.0), ("Valkey", 0.8)];

/// One product, before it is rendered: its attributes and its on-demand price.
struct Product {
    attributes: Vec<(&'static str, String)>,
    sku: String,
    hourly: f64,
}

impl Product {
    fn attribute(&self, field: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(field))
            .map(|(_, v)| v.as_str())
    }

    /// The document AWS lists for it (format aws_v1).
    fn document(&self) -> String {
        let attributes: serde_json::Map<String, Value> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        let (sku, engine, instance) = (
            &self.sku,
            self.attribute("cacheEngine").unwrap_or_default(),
            self.attribute("instanceType").unwrap_or_default(),
        );
        let on_demand = format!("{sku}.JRTCKXETXF");
        let reserved = format!("{sku}.4NA7Y494T4");
        json!({
            "product": {
                "productFamily": "Cache Instance",
                "attributes": attributes,
                "sku": sku
            },
            "serviceCode": "AmazonElastiCache",
            "terms": {
                "OnDemand": {
                    on_demand.clone(): {
                        "priceDimensions": {
                            format!("{on_demand}.6YS6EN2CT7"): {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "description": format!("${:.4} per {engine} {instance} Node Hour", self.hourly),
                                "appliesTo": [],
                                "rateCode": format!("{on_demand}.6YS6EN2CT7"),
                                "beginRange": "0",
                                "pricePerUnit": {"USD": format!("{:.10}", self.hourly)}
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2025-11-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {}
                    }
                },
                "Reserved": {
                    reserved.clone(): {
                        "priceDimensions": {
                            format!("{reserved}.6YS6EN2CT7"): {
                                "unit": "Hrs",
                                "description": format!("{engine}, {instance} reserved instance applied"),
                                "pricePerUnit": {"USD": format!("{:.10}", self.hourly * 0.63)}
                            }
                        },
                        "sku": sku,
                        "offerTermCode": "4NA7Y494T4",
                        "termAttributes": {
                            "LeaseContractLength": "1yr",
                            "OfferingClass": "standard",
                            "PurchaseOption": "No Upfront"
                        }
                    }
                }
            },
            "version": "20251101000000",
            "publicationDate": "2025-11-01T00:00:00Z"
        })
        .to_string()
    }
}

/// A stable, SKU-shaped id for a product.
fn sku(parts: &[&str]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.join("|").bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..16)
        .map(|i| {
            let x = h.rotate_left(i * 4) ^ (h >> (i % 7));
            ALPHABET[(x % 32) as usize] as char
        })
        .collect()
}

/// Every product the simulated Price List holds, in a fixed order.
fn products() -> impl Iterator<Item = Product> {
    REGIONS
        .iter()
        .flat_map(|&(code, location, prefix, factor)| {
            ENGINES.iter().flat_map(move |&(engine, engine_factor)| {
                US_EAST_1.iter().map(move |&(instance, price)| {
                    let hourly = (price * factor * engine_factor * 10_000.0).round() / 10_000.0;
                    Product {
                        attributes: vec![
                            ("servicecode", "AmazonElastiCache".into()),
                            ("location", location.into()),
                            ("locationType", "AWS Region".into()),
                            ("instanceType", instance.into()),
                            ("currentGeneration", "Yes".into()),
                            ("cacheEngine", engine.into()),
                            ("usagetype", format!("{prefix}NodeUsage:{instance}")),
                            ("operation", format!("CreateCacheCluster:{engine}")),
                            ("regionCode", code.into()),
                            ("servicename", "Amazon ElastiCache".into()),
                        ],
                        sku: sku(&[code, engine, instance]),
                        hourly,
                    }
                })
            })
        })
}

type Refusal = (String, String);

fn invalid(message: impl Into<String>) -> Refusal {
    ("InvalidParameterException".into(), message.into())
}

/// One filter of the request: does a product's attribute pass it?
struct Filter {
    kind: String,
    field: String,
    value: String,
}

impl Filter {
    fn parse(v: &Value) -> Result<Filter, Refusal> {
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| invalid(format!("A filter needs a {k}.")))
        };
        let kind = text("Type")?;
        if !["TERM_MATCH", "EQUALS", "CONTAINS", "ANY_OF", "NONE_OF"].contains(&kind.as_str()) {
            return Err(invalid(format!("{kind} is not a filter type.")));
        }
        Ok(Filter {
            kind,
            field: text("Field")?,
            value: text("Value")?,
        })
    }

    fn passes(&self, p: &Product) -> bool {
        let Some(have) = p.attribute(&self.field) else {
            return self.kind == "NONE_OF";
        };
        let any = || self.value.split(',').any(|v| v.trim() == have);
        match self.kind.as_str() {
            "CONTAINS" => have.contains(&self.value),
            "ANY_OF" => any(),
            "NONE_OF" => !any(),
            _ => have == self.value,
        }
    }
}

/// GetProducts: the request's JSON body → the answer's JSON body, or AWS's error code and
/// message.
pub fn get_products(body: &Value) -> Result<String, Refusal> {
    match body.get("ServiceCode").and_then(Value::as_str) {
        None => return Err(invalid("ServiceCode is required.")),
        Some("AmazonElastiCache") => {}
        Some(other) => {
            return Err((
                "NotFoundException".into(),
                format!(
                    "Service {other} is not listed here (the simulator lists AmazonElastiCache)."
                ),
            ));
        }
    }
    if let Some(f) = body.get("FormatVersion").and_then(Value::as_str)
        && f != FORMAT_VERSION
    {
        return Err(invalid(format!("FormatVersion {f} is not supported.")));
    }
    let filters = match body.get("Filters") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(fs)) => fs.iter().map(Filter::parse).collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("Filters must be a list.")),
    };
    let size = match body.get("MaxResults") {
        None | Some(Value::Null) => MAX_RESULTS,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=100) => n as usize,
            _ => return Err(invalid(format!("MaxResults {v} is not between 1 and 100."))),
        },
    };
    let start = match body.get("NextToken").and_then(Value::as_str) {
        None => 0,
        Some(token) => token
            .strip_prefix("sim-page-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                (
                    "InvalidNextTokenException".to_string(),
                    "The pagination token is invalid. Try again without a pagination token."
                        .to_string(),
                )
            })?,
    };
    let matching: Vec<Product> = products()
        .filter(|p| filters.iter().all(|f| f.passes(p)))
        .collect();
    let page: Vec<String> = matching
        .iter()
        .skip(start)
        .take(size)
        .map(Product::document)
        .collect();
    let mut out = json!({"FormatVersion": FORMAT_VERSION, "PriceList": page});
    if start + size < matching.len() {
        out["NextToken"] = Value::String(format!("sim-page-{}", start + size));
    }
    Ok(out.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(body: Value) -> Value {
        serde_json::from_str(&get_products(&body).unwrap()).unwrap()
    }

    fn term(field: &str, value: &str) -> Value {
        json!({"Type": "TERM_MATCH", "Field": field, "Value": value})
    }

    #[test]
    fn one_type_in_one_region_for_redis_is_one_product_with_its_on_demand_price() {
        let answer = ask(json!({
            "ServiceCode": "AmazonElastiCache",
            "FormatVersion": "aws_v1",
            "Filters": [
                term("instanceType", "cache.r6g.large"),
                term("regionCode", "eu-west-1"),
                term("cacheEngine", "Redis"),
            ]
        }));
        let list = answer["PriceList"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert!(answer.get("NextToken").is_none());
        let doc: Value = serde_json::from_str(list[0].as_str().unwrap()).unwrap();
        assert_eq!(
            doc["product"]["attributes"]["usagetype"],
            "EUW1-NodeUsage:cache.r6g.large"
        );
        let term = doc["terms"]["OnDemand"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap();
        let dim = term["priceDimensions"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap();
        assert_eq!(dim["pricePerUnit"]["USD"], "0.2287000000");
        assert_eq!(dim["unit"], "Hrs");
    }

    #[test]
    fn the_engine_filter_matters_and_an_unlisted_type_has_no_product() {
        let price = |engine: &str, instance: &str| {
            let answer = ask(json!({
                "ServiceCode": "AmazonElastiCache",
                "Filters": [term("instanceType", instance), term("regionCode", "us-east-1"), term("cacheEngine", engine)]
            }));
            let list = answer["PriceList"].as_array().unwrap();
            assert!(list.len() <= 1, "{list:?}");
            list.first().map(|doc| {
                let doc: Value = serde_json::from_str(doc.as_str().unwrap()).unwrap();
                let term = doc["terms"]["OnDemand"].as_object().unwrap();
                let term = term.values().next().unwrap();
                let dim = term["priceDimensions"].as_object().unwrap();
                let dim = dim.values().next().unwrap();
                dim["pricePerUnit"]["USD"]
                    .as_str()
                    .unwrap()
                    .parse::<f64>()
                    .unwrap()
            })
        };
        assert_eq!(price("Redis", "cache.r6g.xlarge"), Some(0.411));
        assert_eq!(price("Valkey", "cache.r6g.xlarge"), Some(0.3288));
        assert_eq!(price("Redis", "cache.r6gd.xlarge"), None);
    }

    #[test]
    fn pages_follow_next_token_and_bad_requests_are_refused_as_aws_does() {
        let base = json!({"ServiceCode": "AmazonElastiCache", "Filters": [term("regionCode", "us-east-1"), term("cacheEngine", "Redis")], "MaxResults": 20});
        let first = ask(base.clone());
        assert_eq!(first["PriceList"].as_array().unwrap().len(), 20);
        let mut all = first["PriceList"].as_array().unwrap().len();
        let mut token = first["NextToken"].as_str().map(str::to_string);
        while let Some(t) = token {
            let mut next = base.clone();
            next["NextToken"] = Value::String(t);
            let page = ask(next);
            all += page["PriceList"].as_array().unwrap().len();
            token = page["NextToken"].as_str().map(str::to_string);
        }
        assert_eq!(all, US_EAST_1.len());
        let code = |body: Value| get_products(&body).unwrap_err().0;
        assert_eq!(code(json!({})), "InvalidParameterException");
        assert_eq!(
            code(json!({"ServiceCode": "AmazonEC2"})),
            "NotFoundException"
        );
        assert_eq!(
            code(json!({"ServiceCode": "AmazonElastiCache", "NextToken": "nope"})),
            "InvalidNextTokenException"
        );
        assert_eq!(
            code(json!({"ServiceCode": "AmazonElastiCache", "MaxResults": 500})),
            "InvalidParameterException"
        );
        assert_eq!(
            code(
                json!({"ServiceCode": "AmazonElastiCache", "Filters": [{"Type": "FUZZY", "Field": "x", "Value": "y"}]})
            ),
            "InvalidParameterException"
        );
    }
}
