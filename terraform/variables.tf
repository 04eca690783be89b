variable "region" {
  description = "AWS region of the bucket and the Ray cluster (us-west-2 is where Earth Search's COGs live)."
  type        = string
  default     = "us-west-2"
}

variable "bucket_name" {
  description = "Name of the bucket holding the published root and the build state."
  type        = string
}

variable "published_prefix" {
  description = "Prefix of the published root inside the bucket (tessera.zarr/, manifests/, ...)."
  type        = string
  default     = "tessera"
}

variable "build_state_prefixes" {
  description = "Prefixes under the published root that only jobs use (part records, run logs); expired by lifecycle."
  type        = list(string)
  default     = ["_parts/", "_runs/", "_staging/"]
}

variable "build_state_days" {
  description = "Days after which build state objects expire."
  type        = number
  default     = 30
}

variable "noncurrent_version_days" {
  description = "Days a replaced object version is kept (recovers from a bad publication)."
  type        = number
  default     = 30
}

variable "cors_allowed_origins" {
  description = "Origins allowed to range-read the root from a browser."
  type        = list(string)
  default     = ["*"]
}

variable "cluster_name" {
  description = "Ray cluster name (cluster.yaml cluster_name); scopes the head node's EC2 permissions."
  type        = string
  default     = "tessera-ray"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = { project = "tessera-ray" }
}
